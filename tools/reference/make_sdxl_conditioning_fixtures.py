#!/usr/bin/env python3
"""Reference SDXL conditioning for crates/sumi-pipeline/tests/sdxl_conditioning.rs, restating
A1111 v1.10.1 on the tiny SDXL base and refiner of make_sdxl_fixtures.py (same synthesised
weights; the test rebuilds them from fixtures/tiny/sdxl*/manifest.json).

What follows A1111 (default options: emphasis "Original", sdxl_clip_l_skip off, crop 0 unless a
case says otherwise):
  * chunking: sd_hijack_clip tokenize_line (make_prompt_fixtures.make_chunker), the same for
    both encoders; attention parsing by A1111's own prompt_parser.parse_prompt_attention;
  * TextConditionalModel.forward/process_tokens per encoder: chunk by chunk, the texts
    together; bigG (id_pad 0) pads with 0 after the first end token, CLIP-L pads with the end
    token; emphasis Original per encoder and chunk (means in float64);
  * FrozenCLIPEmbedderForSDXLWithCustomWords: CLIP-L hidden_states[layer_idx] (layer "hidden",
    11 of 12 at full size: the penultimate), no final layer norm;
    FrozenOpenCLIPEmbedder2WithCustomWords: bigG "penultimate" (input of the last resblock, no
    ln_final) and the pooled embedding ln_final(last)[argmax ids] @ text_projection of the
    first chunk (zs[0].pooled);
  * sd_models_xl.get_learned_conditioning + sgm GeneralConditioner: crossattn = CLIP-L ⊕ bigG
    on the channel axis, vector = pooled ⊕ ConcatTimestepEmbedderND(original_size_as_tuple
    (height, width)) ⊕ (crop_coords_top_left) ⊕ (target_size_as_tuple (height, width)) — the
    refiner: pooled ⊕ original size ⊕ crop ⊕ aesthetic_score —, each value by sgm's
    timestep_embedding (cos first); force_zero_embeddings=['txt'] for an all-empty negative
    prompt zeroes both text embedders' outputs (context and pooled), not the size embeddings.

Usage: make_sdxl_conditioning_fixtures.py [--bpe FILE]   (reads A1111's prompt_parser.py from
the v1.10.1 git mirror; `lark`, which that module imports for schedules, is stubbed: only
parse_prompt_attention is used)
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_prompt_fixtures import make_chunker  # noqa: E402
from make_sdxl_fixtures import LAYERS, TIME_DIM, build  # noqa: E402

MIRROR = "/work/.mirror/kklouzal+stable-diffusion-webui/repo"
OUT = os.path.join(ROOT, "fixtures", "sdxl_conditioning")
ID_START, ID_END = 49406, 49407


def prompt_parser():
    sys.modules.setdefault("lark", types.SimpleNamespace(
        Lark=lambda *a, **k: None, Transformer=object, Tree=object, Token=str,
        visitors=types.SimpleNamespace(Interpreter=object), v_args=lambda **k: (lambda f: f)))
    src = subprocess.run(["git", f"--git-dir={MIRROR}", "show", "v1.10.1:modules/prompt_parser.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("prompt_parser")
    exec(compile(src, "prompt_parser.py", "exec"), mod.__dict__)
    return mod


class Encoder:
    """One SDXL embedder with A1111's TextConditionalModel around it."""

    def __init__(self, te, bigg, tokenize_line):
        self.te, self.bigg, self.tokenize_line = te, bigg, tokenize_line
        self.id_pad = 0 if bigg else ID_END

    def process_tokens(self, batch_tokens, batch_multipliers):
        tokens = torch.asarray(batch_tokens)
        if self.id_end_differs():
            for b in range(len(batch_tokens)):
                index = batch_tokens[b].index(ID_END)
                tokens[b, index + 1:] = self.id_pad
        out = self.te(input_ids=tokens, output_hidden_states=True)
        if self.bigg:
            z = out.hidden_states[-2]
            tm = self.te.text_model
            last = tm.final_layer_norm(out.hidden_states[-1])
            pooled = last[torch.arange(last.shape[0]), tokens.argmax(dim=-1)] @ self.te.text_projection.weight.t()
        else:
            z = out.hidden_states[LAYERS - 1]
            pooled = None
        m = torch.asarray(batch_multipliers)
        original_mean = z.mean(dtype=torch.float64).float()
        z = z * m.reshape(m.shape + (1,)).expand(z.shape)
        new_mean = z.mean(dtype=torch.float64).float()
        z = z * (original_mean / new_mean)
        return z, pooled

    def id_end_differs(self):
        return self.id_pad != ID_END

    def forward(self, texts):
        batch_chunks = [self.tokenize_line(t)[0] for t in texts]
        zs, first = [], None
        for i in range(max(len(c) for c in batch_chunks)):
            batch = [(c[i].tokens, c[i].multipliers) if i < len(c) else
                     ([ID_START] + [ID_END] * 76, [1.0] * 77) for c in batch_chunks]
            z, pooled = self.process_tokens([t for t, _ in batch], [m for _, m in batch])
            if i == 0:
                first = pooled
            zs.append(z)
        return torch.hstack(zs), first


def timestep_embedding(x, dim):
    """sgm.modules.diffusionmodules.util.timestep_embedding (cos first), max_period 10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = x[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def concat_embed(values):
    """ConcatTimestepEmbedderND: each value of [b, n] embedded, flattened per row."""
    b, n = values.shape
    return timestep_embedding(values.flatten(), TIME_DIM).reshape(b, n * TIME_DIM)


def conditioner(encoders, texts, values, zero):
    crossattn, vector = [], []
    for enc in encoders:
        z, pooled = enc.forward(texts)
        if zero:
            z = torch.zeros_like(z)
            pooled = None if pooled is None else torch.zeros_like(pooled)
        crossattn.append(z)
        if pooled is not None:
            vector.append(pooled)
    rows = torch.tensor([values] * len(texts), dtype=torch.float32)
    for j in range(0, len(values), 2):
        vector.append(concat_embed(rows[:, j:j + 2]))
    return torch.cat(crossattn, dim=2), torch.cat(vector, dim=1)


# (arch, texts, negative, width, height, crop top, crop left)
CASES = [
    ("sdxl", ["a photo of a (cat:1.3) on a [blurry] hill, masterpiece"], False, 96, 64, 0, 0),
    ("sdxl", [", ".join(["(red flowers:1.1)", "a tall tree", "[fog]", "mountains far away"] * 6)
              + " BREAK ((sketch)), lineart"], False, 64, 64, 16, 8),
    ("sdxl", [""], True, 96, 64, 0, 0),
    ("sdxl", ["lowres, (bad hands:1.2), text"], True, 64, 96, 0, 0),
    ("sdxl", ["a cat on a hill", "a (dog:1.5) on a hill, " + "word " * 80], False, 64, 64, 0, 0),
    ("sdxl-refiner", ["a photo of a (cat:1.3) on a [blurry] hill"], False, 96, 64, 0, 0),
    ("sdxl-refiner", [""], True, 96, 64, 0, 0),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    args = ap.parse_args()
    pp = prompt_parser()
    from transformers import CLIPTokenizer
    d = os.path.join(tempfile.mkdtemp(), "tok")
    subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), args.bpe, d, "--pad", "sd1"],
                   check=True, capture_output=True)
    tok = CLIPTokenizer.from_pretrained(d)
    tokenize_line = make_chunker(pp, tok, [])
    models = {}
    os.makedirs(OUT, exist_ok=True)
    tensors, cases = {}, []
    with torch.no_grad():
        for i, (arch, texts, negative, width, height, top, left) in enumerate(CASES):
            if arch not in models:
                _, _, te1, te2 = build(arch)
                models[arch] = ([] if te1 is None else [Encoder(te1, False, tokenize_line)]) + \
                    [Encoder(te2, True, tokenize_line)]
            if arch == "sdxl":
                values = [height, width, top, left, height, width]
            else:
                values = [height, width, top, left, 2.5 if negative else 6.0]
            zero = negative and all(t == "" for t in texts)
            ctx, vec = conditioner(models[arch], texts, values, zero)
            tensors[f"c{i}_context"], tensors[f"c{i}_vector"] = ctx.contiguous(), vec.contiguous()
            cases.append({"arch": arch, "texts": texts, "negative": negative, "width": width,
                          "height": height, "crop_top": top, "crop_left": left, "zero": zero})
            print(i, arch, list(ctx.shape), list(vec.shape), zero)
    save_file(tensors, os.path.join(OUT, "conditioning.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_conditioning_fixtures.py", "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
