//! The request vocabulary front ends parse their strings into, re-exported so that they need no
//! crate below this one: sampler and scheduler kinds (A1111's names, aliases and legacy combined
//! names such as "DPM++ 2M Karras" through [`parse_sampler_and_scheduler`]), the lists the API
//! shows ([`ALL_SAMPLERS`], [`ALL_SCHEDULERS`]), the noise source and A1111's seed rule
//! ([`fixed_seed`]), the compute precision, the prediction type and where it came from, and the
//! checkpoint container formats.

pub use sumi_models::Precision;
pub use sumi_sampling::names::{parse_sampler_and_scheduler, SamplerOptions, ALL_SAMPLERS};
pub use sumi_sampling::noise::fixed_seed;
pub use sumi_sampling::schedules::ALL_SCHEDULERS;
pub use sumi_sampling::{NoiseSource, SamplerKind, Scheduler};
pub use sumi_weights::{Format, ModelHash, Prediction, PredictionSource, StorageDtype};

pub use crate::conditioning::Emphasis;
pub use crate::image::ResizeMode;
pub use crate::request::MaskedContent;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_combined_names_parse_through_the_vocabulary() {
        // a suffix naming the sampler's own default scheduler is Automatic (A1111's
        // `convert_automatic`)
        let (s, sch) = parse_sampler_and_scheduler("DPM++ 2M Karras", None).unwrap();
        assert_eq!((s.label(), sch), ("DPM++ 2M", Scheduler::Automatic));
        let (s, sch) = parse_sampler_and_scheduler("Euler a Karras", Some("Uniform")).unwrap();
        assert_eq!((s.label(), sch), ("Euler a", Scheduler::Karras));
        assert!(parse_sampler_and_scheduler("Euler b", None).is_err());
        assert_eq!(ALL_SAMPLERS.len(), 20);
        assert_eq!(ALL_SCHEDULERS.len(), 12);
        assert_eq!("CPU".parse::<NoiseSource>().unwrap(), NoiseSource::Cpu);
        assert_eq!(fixed_seed(1234), 1234);
        assert_eq!("v".parse::<Prediction>().unwrap(), Prediction::V);
    }
}
