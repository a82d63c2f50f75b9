"""Recomputes, in place, the cases of the generate and hires references whose latents are not
multiples of 8 (where the U-Net's up path differs between diffusers and A1111,
a1111_unet.py), now that make_generate_fixtures.py runs the U-Net A1111's way; the other
cases are unchanged by that and are kept as they are (rerunning the whole matrices takes an
hour on two cores). Running make_generate_fixtures.py / make_hires_fixtures.py whole gives the
same files.

Usage: update_a1111_unet_cases.py TOKENIZER_SD1_DIR TOKENIZER_SD2_DIR FIXTURES_DIR
  (Pillow 9.5.0 in tools/reference/.pil95 or $PIL95, as for make_hires_fixtures.py)
"""

import os
import sys

import make_inpaint_fixtures  # noqa: F401 (first: Pillow 9.5.0 on the path)
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

import make_generate_fixtures as G
import make_hires_fixtures as H


def odd(*latent_sides):
    return any(s % 8 for s in latent_sides)


def update(path, cases, run, keep_image):
    ref = load_file(path)
    for c in cases:
        lat, img = run(c)
        old = ref[c["name"] + "/latents"]
        d = float((old - lat).abs().max()) / max(1.0, float(lat.abs().max()))
        print(c["name"], tuple(lat.shape), f"moved {d:.2e} of max(1, max |x|)")
        ref[c["name"] + "/latents"] = lat
        if keep_image(c):
            ref[c["name"] + "/image"] = img
    save_file({k: v.contiguous() for k, v in ref.items()}, path)


def main():
    torch.set_num_threads(2)
    tok1 = CLIPTokenizer.from_pretrained(sys.argv[1])
    tok2 = CLIPTokenizer.from_pretrained(sys.argv[2])
    fx = sys.argv[3]
    init = Image.open(os.path.join(fx, "generate/init.png")).convert("RGB")
    gen = [c for c in G.CASES + G.MATRIX
           if odd(c.get("width", G.SIZE) // 8, c.get("height", G.SIZE) // 8)]
    update(os.path.join(fx, "generate/reference.safetensors"), gen,
           lambda c: G.run(c, tok1, tok2, init), lambda c: not c.get("latents_only"))
    hires = []
    for c in H.CASES:
        tw, th, tx, ty = H.target(c)
        if odd(c["width"] // 8, c["height"] // 8, tw // 8, th // 8, th // 8 - ty, tw // 8 - tx):
            hires.append(c)
    update(os.path.join(fx, "hires/reference.safetensors"), hires,
           lambda c: H.run(c, tok1, tok2), lambda c: c["name"] in H.IMAGE_CASES)


if __name__ == "__main__":
    main()
