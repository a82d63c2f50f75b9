//! k-diffusion in Rust, under A1111's names and with A1111-compatible noise.
//!
//! * [`denoiser`]: the [`Denoiser`] contract (x, sigma → x0) and the
//!   discrete-time SD adapter (alphas_cumprod ↔ sigma ↔ t, ε and v scalings).
//! * [`schedules`]: A1111's schedule types (karras, exponential, normal, …).
//! * [`samplers`]: one function per sampler, k-diffusion's algorithms; the
//!   [`samplers::sample`] dispatcher takes a [`SamplerKind`].
//! * [`names`]: A1111's sampler and scheduler labels, aliases, defaults and
//!   legacy combined names.
//! * [`noise`], [`rng_torch_cpu`], [`rng_philox`], [`brownian`]: bit-compatible
//!   random numbers (torch CPU, A1111 Philox), A1111's per-image generators
//!   with variation seeds / seed resize / ENSD, and the Brownian tree of the
//!   SDE samplers.
//! * [`img2img`]: strength → which part of the schedule runs.
//!
//! Typical txt2img use: build the schedule with [`names::sampler_sigmas`],
//! draw the initial noise with [`noise::ImageRng`], scale it by `sigmas[0]`,
//! and run [`samplers::sample`] with the ImageRng (or a
//! [`brownian::BrownianTreeNoiseSampler`] for samplers whose
//! [`names::SamplerOptions::brownian_noise`] is set) as the noise sampler.

mod avx_mathfun;
pub mod brownian;
pub mod denoiser;
pub mod error;
pub mod img2img;
pub mod names;
pub mod noise;
pub mod plan;
pub mod rng_philox;
pub mod rng_torch_cpu;
pub mod samplers;
pub mod schedules;
mod special;

pub use denoiser::{CompVisDenoiser, Denoiser, DiscreteSchedule, Prediction};
pub use error::{Result, SamplingError};
pub use names::{SamplerKind, SamplerOptions};
pub use noise::{ImageRng, ImageRngOptions, NoiseSampler, NoiseSource};
pub use plan::{Plan, PlanRequest, SamplerNoise, Strength};
pub use samplers::{sample, Level, SamplerParams, Step};
pub use schedules::Scheduler;
