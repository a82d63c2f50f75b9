#!/usr/bin/env python3
"""End-to-end reference for crates/sumi-pipeline/tests/sd_upscale_parity.rs: A1111 v1.10.1's
"SD upscale" img2img script (scripts/sd_upscale.py) restated over the tiny SD1 model, with
make_generate_fixtures.py's model, prompts, CFG denoiser, ImageRNG and VAE posterior mean.

As A1111 runs it:
- the init picture enlarged with upscaler.Upscaler.upscale(img, scale) (the built-ins here:
  Lanczos and Nearest, make_hires_fixtures.lanczos_upscale, Pillow 9.5.0); "None" keeps it;
- images.split_grid(img, tile_w=p.width, tile_h=p.height, overlap) (make_upscaler_fixtures.py's copy);
- the tiles in batches of batch_size: batch i of iteration n is one img2img run (process_images
  with p.init_images = the batch's tiles, so each image its own tile) seeded start + i, where
  start = seed + n (p.seed = processed.seed + 1 after each batch): image j of the batch seed
  start + i + j; img2img as make_generate_fixtures: t_enc = int(min(strength, 0.999) · steps),
  sigmas[steps − t_enc − 1:], x = init + noise · sigma, decode, clamp, ×255, uint8;
- images.combine_grid(grid) (likewise), one picture per iteration.

Setup: Pillow 9.5.0 in tools/reference/.pil95 (see make_inpaint_fixtures.py).
Usage: make_sd_upscale_fixtures.py TOKENIZER_SD1_DIR FIXTURES_DIR
  (writes FIXTURES_DIR/sd_upscale/; its sources: FIXTURES_DIR/generate/init.png, the 128x128
  astronaut, and two Lanczos resizes of it written beside the reference)
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_inpaint_fixtures as I  # noqa: E402,F401,I100 (first: it puts Pillow 9.5.0 on the path)
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from k_diffusion import external  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

import make_generate_fixtures as G  # noqa: E402
import make_hires_fixtures as H  # noqa: E402
from make_upscaler_fixtures import combine_grid, split_grid  # noqa: E402 (images.py's, v1.10.1)
from sampling_a1111_fixtures import ImageRNG  # noqa: E402

assert PIL.__version__ == "9.5.0", PIL.__version__

TILE = 128


def case(name, source, upscaler, scale, overlap, sampler="Euler", scheduler=None, rng="CPU", seed=700, steps=4,
         cfg=7.0, strength=0.5, batch=1, n_iter=1):
    return dict(name=name, mode="img2img", source=source, upscaler=upscaler, scale=scale, overlap=overlap, sampler=sampler,
                scheduler=scheduler, rng=rng, seed=seed, steps=steps, cfg=cfg, strength=strength, batch=batch,
                n_iter=n_iter, width=TILE, height=TILE)


CASES = [
    # 128² → 192² (Lanczos 1.5), 2x2 tiles overlapping 32+, batches of 2, two iterations
    case("lanczos_batch2_iter2", "generate/init.png", "Lanczos", 1.5, 32, batch=2, n_iter=2),
    # "None": a 200x136 source as it is, 2x2 tiles, batches of 3 and 1, Euler a (sampler noise), NV noise
    case("none_batch3_euler_a", "sd_upscale/source_200x136.png", "None", 2.0, 16, sampler="Euler a", rng="NV", seed=701,
         strength=0.6),
    # Nearest 2x of a 128x64 source: 3x1 tiles overlapping 48+, DPM++ 2M Karras
    case("nearest_3x1_dpmpp", "sd_upscale/source_128x64.png", "Nearest", 2.0, 48, sampler="DPM++ 2M", scheduler="karras",
         seed=702, strength=0.45),
]


def img2img(c, models, tiles, seeds):
    """One process_images over a batch of tiles (k-diffusion samplers; posterior mean)."""
    unet, vae, te, tok = models
    inner = external.CompVisDenoiser(G.LDM(unet))
    with torch.no_grad():
        cond, uncond = G.encode(te, tok, G.PROMPT, False), G.encode(te, tok, G.NEGATIVE, False)
        shape = (4, c["height"] // 8, c["width"] // 8)
        rng = ImageRNG(c["rng"], shape, seeds)
        steps = c["steps"]
        sigmas = H.sigmas_for(inner, c["scheduler"], steps)
        noise = rng.next()
        x0 = torch.stack([torch.from_numpy(np.asarray(t).astype(np.float32) / 255.0).permute(2, 0, 1) for t in tiles])
        init = vae.encode(x0 * 2 - 1).latent_dist.mean * 0.18215
        t_enc = int(min(c["strength"], 0.999) * steps)
        run_sigmas = sigmas[steps - t_enc - 1:]
        x = init + noise * run_sigmas[0]
        den = G.CFGDenoiser(inner, cond, uncond, c["cfg"])
        out = H.sample(den, x, run_sigmas, c["sampler"], rng)
        return [Image.fromarray(p) for p in H.to_uint8(vae.decode(out / 0.18215).sample)]


def run(c, models, fixtures):
    init_img = Image.open(os.path.join(fixtures, c["source"])).convert("RGB")
    if c["upscaler"] != "None":
        resample = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}[c["upscaler"]]
        img = H.lanczos_upscale(init_img, c["scale"], resample)
    else:
        img = init_img
    grid = split_grid(img, tile_w=c["width"], tile_h=c["height"], overlap=c["overlap"])
    work = [t[2] for _y, _h, row in grid.tiles for t in row]
    batch_size = c["batch"]
    batch_count = math.ceil(len(work) / batch_size)
    results, made_tiles = [], []
    for n in range(c["n_iter"]):
        start = c["seed"] + n
        work_results = []
        for i in range(batch_count):
            chunk = work[i * batch_size:(i + 1) * batch_size]
            # process_images: a batch of one tile repeats it batch_size times (extra images unused); fewer
            # tiles shrink the batch; each image's noise is its own generator's, so the tiles' results are
            # those of a batch of just these tiles with seeds start + i + j
            work_results += img2img(c, models, chunk, [start + i + j for j in range(len(chunk))])
        made_tiles += work_results
        idx = 0
        for _y, _h, row in grid.tiles:
            for tiledata in row:
                tiledata[2] = work_results[idx]
                idx += 1
        results.append(combine_grid(grid))
    return img, results, made_tiles


def main():
    torch.set_num_threads(2)
    tok = CLIPTokenizer.from_pretrained(sys.argv[1])
    fixtures = sys.argv[2]
    source = Image.open(os.path.join(fixtures, "generate", "init.png")).convert("RGB")
    out = os.path.join(fixtures, "sd_upscale")
    os.makedirs(out, exist_ok=True)
    # the sources: the astronaut as it is, and Lanczos-resized to 200x136 and 128x64
    source.resize((200, 136), Image.LANCZOS).save(os.path.join(out, "source_200x136.png"))
    source.resize((128, 64), Image.LANCZOS).save(os.path.join(out, "source_128x64.png"))
    unet, vae, te = G.build("sd1", G.ARCH_SEED["sd1"])
    models = (unet, vae, te, tok)
    tensors = {}
    for c in CASES:
        up, results, tiles = run(c, models, fixtures)
        tensors[c["name"] + "/images"] = torch.from_numpy(np.stack([np.asarray(r) for r in results]))
        tensors[c["name"] + "/tiles"] = torch.from_numpy(np.stack([np.asarray(t) for t in tiles]))
        print(c["name"], up.size, len(results), len(tiles), float(np.asarray(results[0]).mean()))
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": G.PROMPT, "negative_prompt": G.NEGATIVE, "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
