//! k-diffusion in Rust, under A1111's names and with A1111-compatible noise.
//!
//! * [`denoiser`]: the [`Denoiser`] contract (x, sigma → x0) and the
//!   discrete-time SD adapter (alphas_cumprod ↔ sigma ↔ t, ε and v scalings).
//! * [`schedules`]: A1111's schedule types (karras, exponential, normal, …).
//! * [`plan`]: the one entry that runs every A1111 sampler — a [`Plan`] knows the schedule
//!   (sigmas, DDIM timesteps, or DPM-Solver's sigma range), A1111's img2img start (`t_enc`),
//!   the minimum step count and the noise the sampler draws.
//! * [`samplers`]: one function per sampler, k-diffusion's algorithms and A1111's own
//!   (Restart, DDIM, DDIM CFG++, PLMS, UniPC).
//! * [`names`]: A1111's sampler and scheduler labels, aliases, defaults and
//!   legacy combined names.
//! * [`noise`], [`rng_torch_cpu`], [`rng_philox`], [`brownian`]: bit-compatible
//!   random numbers (torch CPU, A1111 Philox), A1111's per-image generators
//!   with variation seeds / seed resize / ENSD, and the Brownian tree of the
//!   SDE samplers.
//! * [`img2img`]: strength → which part of the schedule runs.
//!
//! Typical use: [`Plan::new`] from the request, draw the initial noise with
//! [`noise::ImageRng`], [`Plan::start`] (noise · σ₀, or `init + noise · σ_start` for img2img),
//! then [`Plan::run`] with the denoiser, the same ImageRng and the batch's seeds (the plan
//! builds the Brownian tree for the SDE samplers itself).

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
