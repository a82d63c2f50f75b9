//! A1111 v1.10.1's "SD upscale" img2img script (`scripts/sd_upscale.py`): the init picture
//! enlarged by an image upscaler (`Upscaler.upscale(img, scale)`; `None` leaves it as it is),
//! cut into overlapping tiles of the request's width × height ([`grid::split_grid`]), each tile
//! run through img2img — `batch_size` tiles a batch, batch `i` of iteration `n` seeded
//! `seed + n + i` (A1111's `p.seed = processed.seed + 1`) —, and the tiles put back with
//! A1111's blending ([`grid::combine_grid`]). One combined picture per iteration (`n_iter`);
//! every one carries the first batch's infotext (its seed, the tile size), with
//! `SD upscale overlap` and `SD upscale upscaler`, as A1111's `initial_info`.
//!
//! Where A1111 misbehaves, Sumi refuses: an upscaled picture smaller than a tile (A1111 pads
//! such tiles with black), an overlap not below the tile size (a division by zero there), a
//! tile size that is not a multiple of 8 (A1111 pastes 8-rounded tiles into unrounded slots),
//! and a mask (A1111 would apply the whole picture's mask to every tile). An interrupt hands
//! over the current iteration's picture with the tiles not made left black (as A1111's
//! `Image.new` stand-ins) and runs no further iteration (A1111 would return all-black ones).

pub mod grid;

use std::ops::ControlFlow;

use candle_core::Tensor;
use image::RgbImage;
use sumi_prompt::Timeline;
use sumi_sampling::noise::{batch_seeds, fixed_seed};
use sumi_sampling::Plan;

use crate::batch::{BatchInputs, BatchSeeds, Conds};
use crate::error::Result;
use crate::generate::{conditioning_steps, plan_request, request_error};
use crate::generate::{Generated, Pipeline, Progress, Stop};
use crate::init::{Init, LatentShape};
use crate::request::{bad, Img2Img, Request};
use crate::upscale::{TileOptions, Upscaler, UpscalerKind, UpscalerRegistry};
use grid::{combine_grid, origins, split_grid, Grid};

/// Most tiles one SD upscale may cut its picture into.
pub const MAX_TILES: u32 = 4096;
/// Largest scale factor accepted (A1111's slider: 1 to 4; the picture's size is bounded too).
pub const MAX_SCALE: f64 = 16.0;

/// Which upscaler enlarges the picture (`script_args[2]`: A1111 takes an index into its list
/// of upscalers, or a name compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdUpscaler {
    /// A name (`"None"`, `"Lanczos"`, `"R-ESRGAN 4x+"`, …), any case.
    Name(String),
    /// An index into the upscaler list (0 is `None`).
    Index(usize),
}

impl SdUpscaler {
    /// The upscaler this names in `registry`; an unknown one is a request error listing them.
    pub fn resolve<'a>(&self, registry: &'a UpscalerRegistry) -> Result<&'a Upscaler> {
        let entries = registry.entries();
        let found = match self {
            Self::Name(n) => entries
                .iter()
                .find(|u| u.name().to_lowercase() == n.to_lowercase()),
            Self::Index(i) => entries.get(*i),
        };
        found.ok_or_else(|| {
            let asked = match self {
                Self::Name(n) => format!("`{n}`"),
                Self::Index(i) => format!("number {i}"),
            };
            bad(
                "sd-upscale-upscaler",
                format!(
                    "no upscaler {asked}; the upscalers are (from 0): {}",
                    registry.names().join(", ")
                ),
            )
        })
    }

    /// Whether this is A1111's `None` (the picture is not enlarged).
    fn is_none(&self) -> bool {
        match self {
            Self::Name(n) => n.eq_ignore_ascii_case("none"),
            Self::Index(i) => *i == 0,
        }
    }
}

/// The SD upscale script's settings (`script_args`: `["", overlap, upscaler, scale]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SdUpscale {
    /// Tile overlap in pixels (A1111's default 64).
    pub overlap: u32,
    /// The upscaler.
    pub upscaler: SdUpscaler,
    /// The scale factor (A1111's default 2).
    pub scale: f64,
}

impl Default for SdUpscale {
    /// A1111's UI defaults: overlap 64, the first upscaler (`None`), scale 2.
    fn default() -> Self {
        Self {
            overlap: 64,
            upscaler: SdUpscaler::Index(0),
            scale: 2.0,
        }
    }
}

impl SdUpscale {
    /// Checks the settings against the request (img2img without a mask, tile sides multiples
    /// of 8, a finite positive scale, the tile count within [`MAX_TILES`]).
    pub fn validate(&self, req: &Request) -> Result<()> {
        let Some(i) = &req.img2img else {
            return Err(bad("script-name", "SD upscale is an img2img script"));
        };
        if i.inpaint.is_some() {
            return Err(bad(
                "script-name",
                "SD upscale takes no mask (A1111 would apply the whole mask to every tile)",
            ));
        }
        if req.hires.is_some() {
            return Err(bad("enable-hr", "SD upscale is an img2img script"));
        }
        if !req.width.is_multiple_of(8) || !req.height.is_multiple_of(8) {
            return Err(bad(
                "width",
                format!(
                    "SD upscale's tiles ({}x{}) must be multiples of 8 a side",
                    req.width, req.height
                ),
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= MAX_SCALE) {
            return Err(bad(
                "sd-upscale-scale",
                format!("{} is outside (0, {MAX_SCALE}]", self.scale),
            ));
        }
        if i.init_image.width() > 0 {
            let (cols, rows) = self.grid_shape(req, &i.init_image)?;
            if u64::from(cols) * u64::from(rows) > u64::from(MAX_TILES) {
                return Err(bad(
                    "sd-upscale-overlap",
                    format!("{cols}x{rows} tiles is more than the limit of {MAX_TILES}"),
                ));
            }
        }
        Ok(())
    }

    /// The size of the upscaled picture: the source's with `None`, else A1111's
    /// `Upscaler.upscale` size, `⌊w·scale⌋₈ × ⌊h·scale⌋₈`.
    pub fn upscaled_size(&self, (w, h): (u32, u32)) -> (u32, u32) {
        if self.upscaler.is_none() {
            return (w, h);
        }
        let dest = |v: u32| ((f64::from(v) * self.scale / 8.0).floor() as u64 * 8) as u32;
        (dest(w), dest(h))
    }

    /// `(cols, rows)` of tiles for `source`: A1111's `split_grid` counts; an upscaled picture
    /// smaller than a tile and an overlap not below the tile size are refused.
    fn grid_shape(&self, req: &Request, source: &RgbImage) -> Result<(u32, u32)> {
        let (w, h) = self.upscaled_size(source.dimensions());
        let (tw, th, ov) = (req.width, req.height, self.overlap);
        if ov >= tw.min(th) {
            return Err(bad(
                "sd-upscale-overlap",
                format!("the overlap ({ov}) must be smaller than the tile ({tw}x{th})"),
            ));
        }
        if w < tw || h < th {
            return Err(bad(
                "sd-upscale-scale",
                format!(
                    "the upscaled picture ({w}x{h}) is smaller than a tile ({tw}x{th}); use a \
                     larger scale or a smaller width and height"
                ),
            ));
        }
        let count = |len, tile| origins(len, tile, ov).len() as u32;
        Ok((count(w, tw), count(h, th)))
    }

    /// Sampler runs of the whole request (A1111's `state.job_count`: batches of tiles × n_iter),
    /// for progress reports; 0 when the request does not validate.
    pub fn job_count(&self, req: &Request) -> u32 {
        let Some(i) = &req.img2img else { return 0 };
        match self.grid_shape(req, &i.init_image) {
            Ok((c, r)) => (c * r).div_ceil(req.batch_size.max(1)) * req.batch_count,
            Err(_) => 0,
        }
    }

    /// The infotext keys the script adds, in A1111's order.
    pub fn infotext_params(&self, upscaler: &str) -> Vec<(String, String)> {
        vec![
            ("SD upscale overlap".into(), self.overlap.to_string()),
            ("SD upscale upscaler".into(), upscaler.to_string()),
        ]
    }
}

/// What the iterations share.
struct TileRun<'a> {
    img2img: &'a Img2Img,
    grid: Grid,
    batches: u32,
    params: Vec<(String, String)>,
}

impl Pipeline {
    /// Runs `req` through the SD upscale script `s` (see the module doc): one picture per
    /// iteration to `on_image`; `on_step` sees every sampler step, and is asked between the
    /// upscaler's tiles and the prompt's chunks whether to interrupt. Returns the warnings.
    pub(crate) fn generate_sd_upscale(
        &self,
        req: &Request,
        s: &SdUpscale,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Generated) -> Result<()>,
    ) -> Result<Vec<String>> {
        s.validate(req)?;
        let i = req.img2img.as_ref().expect("validated: img2img");
        let upscaler = s.upscaler.resolve(&self.upscalers)?;
        let jobs = s.job_count(req);
        let Some(big) = self.sd_upscale_source(req, s, upscaler, jobs, on_step)? else {
            return Ok(Vec::new());
        };
        let grid = split_grid(&big, req.width, req.height, s.overlap);
        drop(big);
        let tiles = grid.tile_count() as u32;
        let batches = tiles.div_ceil(req.batch_size);

        let plan = Plan::new(&plan_request(req), &self.schedule).map_err(request_error)?;
        let active = self.activate_networks(req)?;
        let timeline = Timeline::new(conditioning_steps(req.sampler, req.steps));
        let prompts = (req.prompt.as_str(), req.negative_prompt.as_str());
        let encoded =
            self.encode_prompts(&active, prompts, &timeline, req, plan.steps(), on_step)?;
        let Some((cond, uncond)) = encoded else {
            return Ok(active.warnings);
        };
        // A1111's img2img of each tile: its source encoded, then the networks, then the decode
        let mut params = s.infotext_params(upscaler.name());
        let encoder = self.taesd_encoder.is_some();
        params.extend(encoder.then(|| crate::decode::taesd_param("VAE Encoder")));
        params.extend(active.extra_params.iter().cloned());
        params.extend(self.vae_decoder_param());
        let run = TileRun {
            img2img: i,
            grid,
            batches,
            params,
        };
        let (seed, subseed) = (fixed_seed(req.seed), fixed_seed(req.subseed));
        // the tiles' requests (the init picture is cloned once here, then dropped)
        let batch_req = Request {
            batch_count: jobs,
            img2img: None,
            sd_upscale: None,
            ..req.clone()
        };
        for n in 0..req.batch_count {
            let conds = Conds {
                cond: &cond,
                uncond: &uncond,
            };
            let (image, latents, stop) =
                self.sd_upscale_iteration(&run, &batch_req, (&active, conds), &plan, n, on_step)?;
            on_image(Generated {
                image,
                seed,
                subseed,
                latents,
                extra_params: run.params.clone(),
            })?;
            if stop {
                break;
            }
        }
        Ok(active.warnings)
    }

    /// The init picture enlarged (`None`: as it is); `None` when `on_step` interrupts between
    /// the upscaler's tiles.
    fn sd_upscale_source(
        &self,
        req: &Request,
        s: &SdUpscale,
        upscaler: &Upscaler,
        jobs: u32,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<Option<RgbImage>> {
        let source = &req.img2img.as_ref().expect("validated: img2img").init_image;
        if *upscaler.kind() == UpscalerKind::None {
            return Ok(Some(source.clone()));
        }
        let mut interrupted = false;
        let mut on_tile = |_| {
            let asked = interrupt_asked(on_step, jobs);
            interrupted |= asked.is_break();
            asked
        };
        let img = upscaler.upscale(source, s.scale, TileOptions::default(), &mut on_tile)?;
        Ok((!interrupted).then_some(img))
    }

    /// One iteration: every batch of tiles through img2img, then the tiles combined. Returns
    /// the picture, the last batch's latents and whether an interrupt ended the run.
    fn sd_upscale_iteration(
        &self,
        run: &TileRun<'_>,
        batch_req: &Request,
        (active, conds): (&crate::networks::Active, Conds<'_>),
        plan: &Plan,
        n: u32,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<(RgbImage, Tensor, bool)> {
        let tiles: Vec<&RgbImage> = run
            .grid
            .rows
            .iter()
            .flat_map(|r| r.tiles.iter().map(|t| &t.image))
            .collect();
        let per = batch_req.batch_size as usize;
        let shape = LatentShape::of_pixels(batch_req.width, batch_req.height);
        let start = fixed_seed(batch_req.seed) + u64::from(n);
        let subseed = fixed_seed(batch_req.subseed);
        let mut made: Vec<RgbImage> = Vec::with_capacity(tiles.len());
        let mut latents = None;
        let mut interrupted = false;
        let fired = std::cell::Cell::new(crate::cfg_skip::Fired::default());
        for (b, chunk) in tiles.chunks(per).enumerate() {
            let req = Request {
                batch_size: chunk.len() as u32,
                ..batch_req.clone()
            };
            let init = self.tiles_init(&req, run.img2img, chunk, shape)?;
            let (seeds, subseeds) =
                batch_seeds(start + b as u64, subseed, req.subseed_strength, chunk.len());
            let inputs = BatchInputs {
                unet: &active.unet,
                hypernetworks: &active.hypernetworks,
                extra_params: &[],
                req: &req,
                plan,
                init: &init,
                conds: Conds {
                    cond: conds.cond,
                    uncond: conds.uncond,
                },
                shape,
                pass: (0, 1),
                fired: &fired,
                refiner: None,
            };
            let batch = BatchSeeds {
                index: n * run.batches + b as u32,
                seeds,
                subseeds,
            };
            let outcome = self.run_batch(&inputs, batch, on_step)?;
            latents = outcome.images.last().map(|g| g.latents.clone());
            made.extend(outcome.images.into_iter().map(|g| g.image));
            if outcome.stop == Some(Stop::Interrupt) {
                interrupted = true;
                break;
            }
        }
        let mut grid = run.grid.clone();
        let mut made = made.into_iter();
        let (tile_w, tile_h) = (grid.tile_w, grid.tile_h);
        for t in grid.tiles_mut() {
            t.image = made.next().unwrap_or_else(|| RgbImage::new(tile_w, tile_h));
        }
        let latents = latents.expect("at least one tile");
        Ok((combine_grid(&grid), latents, interrupted))
    }

    /// The img2img start of a batch of tiles: each tile's latents (and, for inpainting
    /// checkpoints, its image conditioning), one row per tile.
    fn tiles_init(
        &self,
        req: &Request,
        i: &Img2Img,
        tiles: &[&RgbImage],
        shape: LatentShape,
    ) -> Result<Init> {
        let mut latents = Vec::with_capacity(tiles.len());
        let mut conds = Vec::new();
        for t in tiles {
            let one = Request {
                batch_size: 1,
                img2img: Some(Img2Img {
                    init_image: (*t).clone(),
                    resize_mode: i.resize_mode,
                    denoising_strength: i.denoising_strength,
                    inpaint: None,
                }),
                ..req.clone()
            };
            let init = self.prepare_init(&one, shape, (req.width, req.height), 0)?;
            latents.extend(init.latents);
            conds.extend(init.image_cond);
        }
        Ok(Init {
            latents: Some(Tensor::cat(&latents, 0)?),
            mask: None,
            blend: None,
            image_cond: if conds.is_empty() {
                None
            } else {
                Some(Tensor::cat(&conds, 0)?)
            },
            params: Vec::new(),
            notes: Vec::new(),
        })
    }
}

/// Asks `on_step` whether to stop (a progress report without a step), for the upscaler's tiles.
pub(crate) fn interrupt_asked(
    on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    batch_count: u32,
) -> ControlFlow<()> {
    let p = Progress {
        batch: 0,
        batch_count,
        pass: 0,
        passes: 1,
        step: 0,
        steps: 0,
        denoised: None,
        elapsed: Default::default(),
    };
    match on_step(&p) {
        ControlFlow::Break(Stop::Interrupt) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    }
}
