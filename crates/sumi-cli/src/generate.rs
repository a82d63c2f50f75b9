//! `sumi txt2img` and `sumi img2img`: clap → `Request` → `Pipeline::generate` → PNG files.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use crate::progress_bar::ProgressBar;
use crate::ranged::between;
use anyhow::{bail, Context, Result};
use sumi_pipeline::image::{load_image, load_init_image, ResizeMode};
use sumi_pipeline::infotext::{parse_generation_parameters, Parameters};
use sumi_pipeline::request::{MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_MASK_BLUR, MAX_SIDE, MAX_STEPS};
use sumi_pipeline::{
    parse_sampler_and_scheduler, Hires, Img2Img, Inpaint, LoadOptions, MaskedContent, NoiseSource,
    Pipeline, Request, UncondSkip,
};

/// Largest init image accepted, in pixels.
const MAX_INIT_PIXELS: u64 = 64 * 1024 * 1024;

/// Options shared by txt2img and img2img. Unset options come from `--infotext`/`--from-png`
/// when given, else A1111's UI defaults (shown in brackets).
#[derive(clap::Args, Debug)]
pub struct Common {
    /// The checkpoint: a .safetensors or .ckpt file, a diffusers folder, or a Hugging Face Hub
    /// id (org/name, org/name/file.safetensors, …@revision; downloaded once into the Hub cache)
    /// [$SUMI_MODEL, else stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors].
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt, in A1111 syntax [""].
    #[arg(long)]
    prompt: Option<String>,
    /// The negative prompt [""].
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Seed; -1 picks a random one, printed and recorded [-1].
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<i64>,
    /// Variation seed; -1 picks a random one [-1].
    #[arg(long, allow_hyphen_values = true)]
    subseed: Option<i64>,
    /// Variation strength, 0–1 [0].
    #[arg(long)]
    subseed_strength: Option<f32>,
    /// Sampling steps [20].
    #[arg(long, value_parser = between::<u32>("steps", 1, MAX_STEPS.into()))]
    steps: Option<u32>,
    /// Classifier-free guidance scale [7].
    #[arg(long)]
    cfg_scale: Option<f64>,
    /// Sampler by A1111 name ("DPM++ 2M", "Euler a", "DPM++ SDE Karras", k_dpmpp_2m, …) ["DPM++ 2M"].
    #[arg(long)]
    sampler: Option<String>,
    /// Schedule type (automatic, karras, exponential, …) [automatic].
    #[arg(long)]
    scheduler: Option<String>,
    /// Width in pixels [txt2img 512; img2img: the init image's aspect at the model's native
    /// area (512², 768² for SD2-v), or following --height with the init image's aspect].
    #[arg(long, value_parser = between::<u32>("width", 64, MAX_SIDE.into()))]
    width: Option<u32>,
    /// Height in pixels [txt2img 512; img2img: as for --width, or following --width with the
    /// init image's aspect].
    #[arg(long, value_parser = between::<u32>("height", 64, MAX_SIDE.into()))]
    height: Option<u32>,
    /// Noise source: gpu, cpu or nv [gpu].
    #[arg(long)]
    rng: Option<String>,
    /// CLIP skip, 1 = last layer [1].
    #[arg(long, value_parser = between::<usize>("clip-skip", 1, 12))]
    clip_skip: Option<usize>,
    /// Images per run.
    #[arg(long, default_value_t = 1, value_parser = between::<u32>("batch-size", 1, MAX_BATCH_SIZE.into()))]
    batch_size: u32,
    /// Runs.
    #[arg(long, default_value_t = 1, value_parser = between::<u32>("batch-count", 1, MAX_BATCH_COUNT.into()))]
    batch_count: u32,
    /// Textual-inversion embeddings folder.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// A folder of LoRA/LyCORIS files for `<lora:name:weight>` tags (searched recursively;
    /// repeatable).
    #[arg(long = "lora-dir", value_name = "DIR")]
    lora_dirs: Vec<PathBuf>,
    /// A folder of hypernetwork `.pt` files for `<hypernet:name:multiplier>` tags (searched
    /// recursively; repeatable).
    #[arg(long = "hypernetwork-dir", value_name = "DIR")]
    hypernetwork_dirs: Vec<PathBuf>,
    /// A folder of upscaler model files (ESRGAN/Real-ESRGAN .pth or .safetensors) for the hires
    /// fix and upscaling, named by file name (searched recursively; repeatable).
    #[arg(long = "upscaler-dir", value_name = "DIR")]
    upscaler_dirs: Vec<PathBuf>,
    /// An external VAE file, or a Hub id (org/name/vae.safetensors).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Decode with this TAESD decoder file instead of the VAE (fast, approximate).
    #[arg(long)]
    taesd_decoder: Option<PathBuf>,
    /// Encode img2img sources (and the hires fix's upscaled pictures) with this TAESD encoder
    /// file instead of the VAE (A1111's "VAE type for encode: TAESD"; fast, approximate).
    #[arg(long)]
    taesd_encoder: Option<PathBuf>,
    /// Compute precision of the U-Net, VAE and text encoder: f32, bf16 (weights in bf16, bf16
    /// dot products with f32 sums), or auto (bf16 where the CPU has AVX-512 BF16, else f32).
    #[arg(long, default_value = "auto", value_name = "f32|bf16|auto")]
    precision: sumi_pipeline::Precision,
    /// Negative guidance minimum sigma (A1111's NGMS, `s_min_uncond`): skip the negative prompt
    /// on every other step below this noise level (faster, a little different), 0 = off [0].
    #[arg(long, value_name = "SIGMA")]
    s_min_uncond: Option<f64>,
    /// With --s-min-uncond: skip it on every step below that level, not every other one.
    #[arg(long)]
    s_min_uncond_all: bool,
    /// Ignore the negative prompt during this fraction of the first steps (A1111's
    /// `skip_early_cond`, 0–1), 0 = off [0].
    #[arg(long, value_name = "FRACTION")]
    skip_early_cond: Option<f64>,
    /// Token merging ratio (A1111's `token_merging_ratio`, tomesd): merge this fraction of the
    /// tokens before the full-resolution self-attention (faster, a little different), 0 = off
    /// [0].
    #[arg(long, value_name = "RATIO")]
    token_merging_ratio: Option<f64>,
    /// Fill unset options from an A1111 infotext.
    #[arg(long, conflicts_with = "from_png")]
    infotext: Option<String>,
    /// Fill unset options from the infotext of a PNG, JPEG or WebP (reproduce an image).
    #[arg(long)]
    from_png: Option<PathBuf>,
    /// Output file, .png, .jpg/.jpeg or .webp (default: a new numbered PNG in ./outputs/);
    /// batches add -0001, -0002, ….
    #[arg(long)]
    output: Option<PathBuf>,
    /// Create --output's folder when it does not exist (else that is an error).
    #[arg(long)]
    mkdir: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    stages: crate::stages::StageArgs,
}

/// `sumi txt2img`.
#[derive(clap::Args, Debug)]
pub struct Txt2ImgArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    hires: HiresArgs,
}

/// The hires fix: a second, img2img pass at a larger size (on when --hr-scale or
/// --hr-resize-x/-y is given, or when the infotext has one).
#[derive(clap::Args, Debug)]
pub struct HiresArgs {
    /// Hires fix: upscale the first pass by this factor [2].
    #[arg(long)]
    hr_scale: Option<f64>,
    /// Hires fix: target width (with --hr-resize-y too: fill and crop, as A1111).
    #[arg(long, value_parser = between::<u32>("hr-resize-x", 0, MAX_SIDE.into()))]
    hr_resize_x: Option<u32>,
    /// Hires fix: target height.
    #[arg(long, value_parser = between::<u32>("hr-resize-y", 0, MAX_SIDE.into()))]
    hr_resize_y: Option<u32>,
    /// Hires fix upscaler: Latent, "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic
    /// antialiased)", "Latent (nearest)", "Latent (nearest-exact)", None, Lanczos, Nearest or an
    /// upscaler model's name [Latent].
    #[arg(long)]
    hr_upscaler: Option<String>,
    /// Hires fix: steps of the second pass, 0 = the same as --steps [0].
    #[arg(long, value_parser = between::<u32>("hr-second-pass-steps", 0, MAX_STEPS.into()))]
    hr_second_pass_steps: Option<u32>,
    /// Hires fix: denoising strength of the second pass [0.7].
    #[arg(long)]
    hr_denoising_strength: Option<f64>,
    /// Hires fix: sampler of the second pass [the first pass's].
    #[arg(long)]
    hr_sampler: Option<String>,
    /// Hires fix: schedule type of the second pass [the first pass's].
    #[arg(long)]
    hr_scheduler: Option<String>,
    /// Hires fix: prompt of the second pass [the prompt].
    #[arg(long)]
    hr_prompt: Option<String>,
    /// Hires fix: negative prompt of the second pass [the negative prompt].
    #[arg(long)]
    hr_negative_prompt: Option<String>,
    /// Hires fix: token merging ratio of the second pass (A1111's `token_merging_ratio_hr`)
    /// [--token-merging-ratio].
    #[arg(long, value_name = "RATIO")]
    token_merging_ratio_hr: Option<f64>,
}

impl HiresArgs {
    /// The hires settings from the options, else from the infotext (A1111's paste rule: a
    /// `Denoising strength` and any hires size or upscaler), else none.
    fn to_hires(&self, info: Option<&Parameters>, req: &Request) -> Result<Option<Hires>> {
        let given =
            self.hr_scale.is_some() || self.hr_resize_x.is_some() || self.hr_resize_y.is_some();
        let from_info = info.is_some_and(|p| {
            p.get("Denoising strength").is_some()
                && ["Hires upscale", "Hires upscaler", "Hires resize-1"]
                    .iter()
                    .any(|k| p.get(k).is_some())
        });
        if !given && !from_info {
            let set = [
                ("--hr-upscaler", self.hr_upscaler.is_some()),
                (
                    "--hr-second-pass-steps",
                    self.hr_second_pass_steps.is_some(),
                ),
                (
                    "--hr-denoising-strength",
                    self.hr_denoising_strength.is_some(),
                ),
                ("--hr-sampler", self.hr_sampler.is_some()),
                ("--hr-scheduler", self.hr_scheduler.is_some()),
                ("--hr-prompt", self.hr_prompt.is_some()),
                ("--hr-negative-prompt", self.hr_negative_prompt.is_some()),
            ];
            // a hires option without the hires fix would be dropped: say so instead
            if let Some((flag, _)) = set.iter().find(|(_, on)| *on) {
                bail!(
                    "{flag}: the hires fix is off; turn it on with --hr-scale or --hr-resize-x/-y"
                );
            }
            return Ok(None);
        }
        let info = info.filter(|_| from_info);
        let text = |given: &Option<String>, key: &str, same: &str| {
            given
                .clone()
                .or_else(|| info.and_then(|p| p.get(key)).map(str::to_string))
                .filter(|v| !v.is_empty() && v != same)
        };
        let sampler_name = text(&self.hr_sampler, "Hires sampler", "Use same sampler");
        let scheduler_name = text(
            &self.hr_scheduler,
            "Hires schedule type",
            "Use same scheduler",
        );
        let sampler = match &sampler_name {
            Some(n) => Some(
                parse_sampler_and_scheduler(n, None)
                    .context("--hr-sampler")?
                    .0,
            ),
            None => None,
        };
        let scheduler = match &scheduler_name {
            Some(n) => {
                let s = sampler.unwrap_or(req.sampler);
                Some(
                    parse_sampler_and_scheduler(s.label(), Some(n))
                        .context("--hr-scheduler")?
                        .1,
                )
            }
            None => None,
        };
        Ok(Some(Hires {
            scale: pick(self.hr_scale, info, "Hires upscale", 2.0)?,
            resize_x: pick(self.hr_resize_x, info, "Hires resize-1", 0)?,
            resize_y: pick(self.hr_resize_y, info, "Hires resize-2", 0)?,
            second_pass_steps: pick(self.hr_second_pass_steps, info, "Hires steps", 0)?,
            denoising_strength: pick(self.hr_denoising_strength, info, "Denoising strength", 0.7)?,
            upscaler: text(&self.hr_upscaler, "Hires upscaler", ""),
            sampler,
            scheduler,
            prompt: text(&self.hr_prompt, "Hires prompt", "").unwrap_or_default(),
            negative_prompt: text(&self.hr_negative_prompt, "Hires negative prompt", "")
                .unwrap_or_default(),
        }))
    }
}

/// `sumi img2img`.
#[derive(clap::Args, Debug)]
pub struct Img2ImgArgs {
    #[command(flatten)]
    common: Common,
    /// The source image.
    #[arg(long)]
    init_image: PathBuf,
    /// How far the result may move from the source, 0–1 [0.75].
    #[arg(long)]
    denoising_strength: Option<f64>,
    /// just-resize, crop-and-resize, resize-and-fill or latent-upscale.
    #[arg(long, default_value = "just-resize")]
    resize_mode: String,
    /// A1111's "do exact steps": run exactly --steps steps whatever the strength.
    #[arg(long)]
    exact_steps: bool,
    /// A1111's "Resize by": work at the init image's size times this (`int(w·F) × int(h·F)`),
    /// e.g. 0.25 for a 4032×3024 phone photo.
    #[arg(long, value_name = "F", conflicts_with_all = ["width", "height"])]
    scale: Option<f64>,
    #[command(flatten)]
    inpaint: InpaintArgs,
    #[command(flatten)]
    sd_upscale: crate::sd_upscale::SdUpscaleArgs,
}

/// Inpainting: change only the masked part of the picture.
#[derive(clap::Args, Debug)]
pub struct InpaintArgs {
    /// A mask image: white (or, in an RGBA image, opaque) marks what changes.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Mask blur in pixels, across and down [4].
    #[arg(long, conflicts_with_all = ["mask_blur_x", "mask_blur_y"],
          value_parser = between::<u32>("mask-blur", 0, MAX_MASK_BLUR.into()))]
    mask_blur: Option<u32>,
    /// Mask blur across [4].
    #[arg(long, value_parser = between::<u32>("mask-blur-x", 0, MAX_MASK_BLUR.into()))]
    mask_blur_x: Option<u32>,
    /// Mask blur down [4].
    #[arg(long, value_parser = between::<u32>("mask-blur-y", 0, MAX_MASK_BLUR.into()))]
    mask_blur_y: Option<u32>,
    /// Change what is not masked instead.
    #[arg(long)]
    mask_invert: bool,
    /// What the masked area starts from: fill, original, latent-noise or latent-nothing [original].
    #[arg(long, default_value = "original")]
    inpainting_fill: String,
    /// Work on the masked area only, at full resolution, and paste it back ("Only masked").
    #[arg(long)]
    inpaint_full_res: bool,
    /// Pixels around the masked area for --inpaint-full-res [32].
    #[arg(long, default_value_t = 32, value_parser = between::<u32>("inpaint-full-res-padding", 0, MAX_SIDE.into()))]
    inpaint_full_res_padding: u32,
    /// Inpainting checkpoints: how much of the source they see, 0–1 [1].
    #[arg(long, default_value_t = 1.0)]
    inpainting_mask_weight: f64,
    /// Use the mask's grey levels as they are instead of A1111's rounding.
    #[arg(long)]
    mask_no_round: bool,
}

impl InpaintArgs {
    /// The pipeline's inpaint settings (`None` without `--mask`).
    fn to_inpaint(&self) -> Result<Option<Inpaint>> {
        let Some(path) = &self.mask else {
            return Ok(None);
        };
        let fill = match self.inpainting_fill.as_str() {
            "fill" => MaskedContent::Fill,
            "original" => MaskedContent::Original,
            "latent-noise" | "latent noise" => MaskedContent::LatentNoise,
            "latent-nothing" | "latent nothing" => MaskedContent::LatentNothing,
            other => bail!(
                "--inpainting-fill: unknown value `{other}` (expected fill, original, latent-noise or latent-nothing)"
            ),
        };
        let mask = load_image(path, MAX_INIT_PIXELS).context("--mask")?;
        let blur = self.mask_blur.unwrap_or(4);
        Ok(Some(Inpaint {
            mask,
            blur_x: self.mask_blur_x.unwrap_or(blur),
            blur_y: self.mask_blur_y.unwrap_or(blur),
            invert: self.mask_invert,
            fill,
            full_res: self.inpaint_full_res,
            full_res_padding: self.inpaint_full_res_padding,
            round: !self.mask_no_round,
        }))
    }
}

/// The infotext given with `--infotext` or found in `--from-png`, parsed; each key Sumi does not
/// apply is named in a warning.
fn infotext(c: &Common) -> Result<Option<Parameters>> {
    let text = match (&c.infotext, &c.from_png) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => {
            crate::inputs::bounded_file(p, "--from-png", crate::inputs::MAX_PNG_BYTES)?;
            sumi_pipeline::image_file::read_parameters(p)
                .with_context(|| format!("--from-png {}", p.display()))?
                .with_context(|| format!("--from-png: {} has no A1111 parameters", p.display()))?
        }
        (None, None) => return Ok(None),
    };
    let p = parse_generation_parameters(&text);
    for w in infotext_warnings(c, &p) {
        eprintln!("warning: {}", crate::terminal::escape_controls(&w));
    }
    Ok(Some(p))
}

/// The infotext keys of A1111's TAESD settings ("VAE type for decode/encode": `VAE Decoder:
/// TAESD`, `VAE Encoder: TAESD`), the option that applies each and the file it takes.
const TAESD_KEYS: [(&str, &str, &str); 2] = [
    (
        "VAE Decoder",
        "--taesd-decoder",
        "taesd_decoder.safetensors",
    ),
    (
        "VAE Encoder",
        "--taesd-encoder",
        "taesd_encoder.safetensors",
    ),
];

/// One warning per key of `p` that this run does not apply. A TAESD key is applied by its
/// option (a file Sumi cannot guess from the infotext; A1111 downloads TAESD's): given, it is
/// quiet; missing, the warning names the option to give.
fn infotext_warnings(c: &Common, p: &Parameters) -> Vec<String> {
    sumi_pipeline::infotext_unapplied::unapplied(p)
        .into_iter()
        .filter_map(|(k, v)| {
            let Some(&(_, option, file)) = TAESD_KEYS
                .iter()
                .find(|(key, ..)| *key == k && v.trim() == "TAESD")
            else {
                return Some(sumi_pipeline::infotext_unapplied::unapplied_warning(&k, &v));
            };
            let given = match option {
                "--taesd-decoder" => c.taesd_decoder.is_some(),
                _ => c.taesd_encoder.is_some(),
            };
            (!given).then(|| {
                format!(
                    "the infotext's `{k}: TAESD` is not applied without {option} (TAESD's \
                     {file}, taesdxl_… for SDXL): the picture may differ"
                )
            })
        })
        .collect()
}

/// An option: given, else from the infotext (`key`), else the default.
fn pick<T: std::str::FromStr>(
    given: Option<T>,
    info: Option<&Parameters>,
    key: &str,
    default: T,
) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = given {
        return Ok(v);
    }
    match info.and_then(|p| p.get(key)) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("infotext `{key}: {v}`: {e}")),
        None => Ok(default),
    }
}

fn request(c: &Common, info: Option<&Parameters>, size: (u32, u32)) -> Result<Request> {
    let sampler_name = match (&c.sampler, info.and_then(|p| p.get("Sampler"))) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.to_string(),
        (None, None) => "DPM++ 2M".into(),
    };
    let scheduler = c.scheduler.clone().or_else(|| {
        info.and_then(|p| p.get("Schedule type"))
            .map(str::to_string)
    });
    let (sampler, scheduler) = parse_sampler_and_scheduler(&sampler_name, scheduler.as_deref())
        .context("--sampler/--scheduler")?;
    let rng: String = pick(c.rng.clone(), info, "RNG", "gpu".into())?;
    let rng: NoiseSource = rng.parse().context("--rng")?;
    Ok(Request {
        prompt: c
            .prompt
            .clone()
            // an old infotext's `Hypernet` becomes a tag, as A1111 pastes it
            .or_else(|| info.map(|p| p.with_a1111_defaults().prompt))
            .unwrap_or_default(),
        negative_prompt: c
            .negative_prompt
            .clone()
            .or_else(|| info.map(|p| p.negative_prompt.clone()))
            .unwrap_or_default(),
        seed: pick(c.seed, info, "Seed", -1)?,
        subseed: pick(c.subseed, info, "Variation seed", -1)?,
        subseed_strength: pick(c.subseed_strength, info, "Variation seed strength", 0.0)?,
        steps: pick(c.steps, info, "Steps", 20)?,
        cfg_scale: pick(c.cfg_scale, info, "CFG scale", 7.0)?,
        sampler,
        scheduler,
        width: pick(c.width, info, "Size-1", size.0)?,
        height: pick(c.height, info, "Size-2", size.1)?,
        rng,
        clip_skip: pick(c.clip_skip, info, "Clip skip", 1)?,
        batch_size: c.batch_size,
        batch_count: c.batch_count,
        exact_steps: false,
        img2img: None,
        lora_hashes: info.and_then(|p| p.get("Lora hashes")).map(str::to_string),
        model_hash: info.and_then(|p| p.get("Model hash")).map(str::to_string),
        uncond_skip: UncondSkip {
            s_min_uncond: pick(c.s_min_uncond, info, "NGMS", 0.0)?,
            s_min_uncond_all: c.s_min_uncond_all
                || info.and_then(|p| p.get("NGMS all steps")).map(str::trim) == Some("True"),
            skip_early_cond: pick(c.skip_early_cond, info, "Skip Early CFG", 0.0)?,
        },
        token_merging_ratio: pick(c.token_merging_ratio, info, "Token merging ratio", 0.0)?,
        ..Default::default()
    })
}

/// Refuses FIFOs, devices and sockets among the files and folders a run reads, before
/// anything opens them (opening a FIFO would wait for a writer forever).
fn check_inputs(c: &Common) -> Result<()> {
    if let Some(m) = &c.model {
        crate::inputs::model(m, "--model")?;
    }
    for (p, what) in [
        (&c.vae, "--vae"),
        (&c.taesd_decoder, "--taesd-decoder"),
        (&c.taesd_encoder, "--taesd-encoder"),
    ] {
        if let Some(p) = p {
            crate::inputs::file(p, what)?;
        }
    }
    if let Some(d) = &c.embeddings {
        crate::inputs::folder(d, "--embeddings")?;
    }
    Ok(())
}

/// Runs `sumi txt2img`.
pub fn txt2img(a: Txt2ImgArgs) -> Result<()> {
    check_inputs(&a.common)?;
    let info = infotext(&a.common)?;
    let mut req = request(&a.common, info.as_ref(), (512, 512))?;
    req.hires = a.hires.to_hires(info.as_ref(), &req)?;
    // A1111's `get_token_merging_ratio(for_hr=True)`: the hires ratio, else the first pass's
    let hr = pick(
        a.hires.token_merging_ratio_hr,
        info.as_ref(),
        "Token merging ratio hr",
        0.0,
    )?;
    req.token_merging_ratio_hr = if hr != 0.0 {
        hr
    } else {
        req.token_merging_ratio
    };
    run(&a.common, info.as_ref(), req, None)
}

/// Runs `sumi img2img`.
pub fn img2img(a: Img2ImgArgs) -> Result<()> {
    check_inputs(&a.common)?;
    crate::inputs::file(&a.init_image, "--init-image")?;
    if let Some(m) = &a.inpaint.mask {
        crate::inputs::file(m, "--mask")?;
    }
    let resize_mode: ResizeMode = a.resize_mode.parse().context("--resize-mode")?;
    let init = load_init_image(&a.init_image, MAX_INIT_PIXELS).context("--init-image")?;
    let info = infotext(&a.common)?;
    let mut req = request(&a.common, info.as_ref(), init.dimensions())?;
    let has = |k: &str| info.as_ref().is_some_and(|p| p.get(k).is_some());
    let given = crate::size::Given {
        width: a.common.width,
        height: a.common.height,
        infotext: (has("Size-1"), has("Size-2")),
        scale: a.scale,
    };
    let auto = crate::size::img2img(&mut req, &given, init.dimensions(), a.common.quiet)?;
    req.exact_steps = a.exact_steps;
    req.img2img = Some(Img2Img {
        init_image: init,
        resize_mode,
        denoising_strength: pick(
            a.denoising_strength,
            info.as_ref(),
            "Denoising strength",
            0.75,
        )?,
        inpaint: a.inpaint.to_inpaint()?,
    });
    req.sd_upscale = a.sd_upscale.to_sd_upscale()?;
    req.inpainting_mask_weight = a.inpaint.inpainting_mask_weight;
    run(&a.common, info.as_ref(), req, auto)
}

/// Runs `req`; with `auto` (the init image's size, no size given) the size is chosen for the
/// loaded model ([`crate::size::native`]).
fn run(
    c: &Common,
    info: Option<&Parameters>,
    mut req: Request,
    auto: Option<(u32, u32)>,
) -> Result<()> {
    req.validate()?;
    let mut outputs = crate::output::Outputs::plan(
        c.output.as_deref(),
        match req.sd_upscale {
            // SD upscale: one picture per run
            Some(_) => req.batch_count as usize,
            None => (req.batch_size * req.batch_count) as usize,
        },
        c.mkdir,
    )?;
    // a Hub model is fetched once the request is known to be valid
    let model = crate::hub_models::model(c.model.as_deref(), "--model", c.quiet)?;
    crate::inputs::model(&model, "--model")?;
    crate::stages::apply(&c.stages, info, &model, &mut req, c.quiet)?;
    req.validate()?;
    let vae = match &c.vae {
        Some(v) => Some(crate::hub_models::file(v, "--vae", c.quiet)?),
        None => None,
    };
    let opts = LoadOptions {
        embeddings: c.embeddings.clone(),
        lora_dirs: c.lora_dirs.clone(),
        hypernetwork_dirs: c.hypernetwork_dirs.clone(),
        upscaler_dirs: c.upscaler_dirs.clone(),
        vae,
        taesd_decoder: c.taesd_decoder.clone(),
        taesd_encoder: c.taesd_encoder.clone(),
        precision: c.precision,
        // one job: its LoRAs are merged as the networks are built
        first_prompt: Some(req.prompt.clone()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let pipe = Pipeline::load(&model, &opts).map_err(|e| match e {
        // an option's own file (--taesd-decoder): named by the option, not the model
        e @ sumi_pipeline::PipelineError::Request { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot load {}", model.display())),
    })?;
    if !c.quiet {
        eprintln!(
            "loaded {} ({}) in {:.1}s",
            model.display(),
            pipe.model.architecture,
            t0.elapsed().as_secs_f64()
        );
    }
    if let Some(image) = auto {
        crate::size::native(&mut req, image, pipe.model.architecture, c.quiet)?;
        req.validate()?;
    }
    let mut bar = ProgressBar::new(c.quiet);
    let on_terminal = bar.on_terminal();
    let mut write = |g: sumi_pipeline::Generated| -> sumi_pipeline::Result<()> {
        let info = pipe.infotext(&req, &g)?.to_string();
        let format = outputs.format();
        let bytes =
            sumi_pipeline::image_file::encode(&g.image, format, Some(&info)).map_err(|reason| {
                sumi_pipeline::PipelineError::ImageEncode {
                    path: c.output.clone().unwrap_or_else(|| "outputs".into()),
                    reason,
                }
            })?;
        let path = outputs.write(&bytes)?;
        if !c.quiet && on_terminal {
            eprintln!();
        }
        // a closed stdout loses the names, not the images: the run goes on
        let _ = crate::terminal::println(&format!("{} (seed {})", path.display(), g.seed));
        Ok(())
    };
    let warnings = pipe.generate_each(
        &req,
        &mut |p| {
            bar.update(p);
            ControlFlow::Continue(())
        },
        &mut write,
    )?;
    bar.finish();
    for w in &warnings {
        eprintln!("warning: {}", crate::terminal::escape_controls(w));
    }
    Ok(())
}
