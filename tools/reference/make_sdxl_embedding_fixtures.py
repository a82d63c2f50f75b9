#!/usr/bin/env python3
"""SDXL textual-inversion embeddings for crates/sumi-pipeline/tests/sdxl_conditioning.rs
(`embeddings_match_a1111`) and sdxl_lora.rs's pipeline checks (fixtures/sdxl_embeddings/):

  * emb/tinyxl.safetensors: an SDXL embedding as A1111 reads it (textual_inversion.py
    create_embedding_from_data: a dict with `clip_l` [2, 64] and `clip_g` [2, 128] for the tiny
    SDXL base's encoders; shape = 64 + 128, vectors = clip_g's 2);
  * emb/tinysd.safetensors: a one-tensor (SD1-style) embedding, 64 wide: its shape is not the
    summed 192, so A1111 skips it on SDXL and the prompt reads its name as words;
  * conditioning.safetensors + cases.json: make_sdxl_conditioning_fixtures.py's restatement of
    A1111's SDXL conditioning with sd_hijack.EmbeddingsWithFixes around each encoder's token
    embedding, each taking its own part (textual_inversion_key 'clip_l' / 'clip_g').

and, for sdxl_conditioning.rs's `uneven_parts_match_a1111` (fixtures/sdxl_embeddings_uneven/),
embeddings whose parts differ in vector count, as A1111 reads them: `vectors` is clip_g's count
(create_embedding_from_data), the positions both encoders' tokenize_line reserve; each
EmbeddingsWithFixes writes its own part from the first of them on (emb_len = min(room, part)):
  * emb/tinyshort.safetensors: clip_l [1, 64], clip_g [3, 128]: CLIP-L's last 2 positions keep
    token 0's embedding;
  * emb/tinylong.safetensors: clip_l [4, 64], clip_g [2, 128]: CLIP-L's part runs on over the 2
    positions after the reserved ones (the next words', or the chunk's end token).

Usage: make_sdxl_embedding_fixtures.py [--bpe FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_conditioning_fixtures import Fixes  # noqa: E402
from make_prompt_fixtures import make_chunker  # noqa: E402
from make_sdxl_conditioning_fixtures import ID_END, ID_START, Encoder, conditioner, prompt_parser  # noqa: E402
from make_sdxl_fixtures import build  # noqa: E402

OUT = os.path.join(ROOT, "fixtures", "sdxl_embeddings")
OUT_UNEVEN = os.path.join(ROOT, "fixtures", "sdxl_embeddings_uneven")
CASES = [
    (["a photo of tinyxl on a (hill:1.2)"], 64, 64),
    (["(tinyxl:1.3) cat, tinysd dog", "a cat on a hill"], 96, 64),
    (["word " * 74 + "tinyxl and more"], 64, 96),  # the embedding moved to the next chunk
]
UNEVEN_CASES = [
    (["a photo of tinyshort on a hill", "(tinylong:1.2) cat, dog"], 64, 64),
    # tinylong's 2 positions end the chunk's 75: CLIP-L's 4 vectors run over its end token
    (["word " * 73 + "tinylong"], 64, 64),
    # tinyshort's 3 positions do not fit after 74 words: moved to the next chunk
    (["word " * 74 + "tinyshort and more"], 64, 96),
]


class FixedEncoder(Encoder):
    """Encoder with EmbeddingsWithFixes: the chunk's fixes written into the token embeddings."""

    def __init__(self, te, bigg, tokenize_line, vectors):
        super().__init__(te, bigg, tokenize_line)
        tm = getattr(te, "text_model", te)
        self.fixes = Fixes(tm.embeddings.token_embedding)
        tm.embeddings.token_embedding = self.fixes
        self.vectors = vectors  # name -> this encoder's part

    def forward(self, texts):
        batch_chunks = [self.tokenize_line(t)[0] for t in texts]
        zs, first = [], None
        for i in range(max(len(c) for c in batch_chunks)):
            batch = [(c[i].tokens, c[i].multipliers, c[i].fixes) if i < len(c) else
                     ([ID_START] + [ID_END] * 76, [1.0] * 77, []) for c in batch_chunks]
            self.fixes.fixes = [[(o, self.vectors[n]) for o, n in f] for _, _, f in batch]
            z, pooled = self.process_tokens([t for t, _, _ in batch], [m for _, m, _ in batch])
            if i == 0:
                first = pooled
            zs.append(z)
        return torch.hstack(zs), first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    args = ap.parse_args()
    g = torch.Generator().manual_seed(77)
    emb = {"clip_l": torch.randn(2, 64, generator=g) * 0.3, "clip_g": torch.randn(2, 128, generator=g) * 0.3}
    os.makedirs(os.path.join(OUT, "emb"), exist_ok=True)
    save_file(emb, os.path.join(OUT, "emb", "tinyxl.safetensors"))
    save_file({"emb_params": torch.randn(1, 64, generator=g)}, os.path.join(OUT, "emb", "tinysd.safetensors"))

    pp = prompt_parser()
    from transformers import CLIPTokenizer
    d = os.path.join(tempfile.mkdtemp(), "tok")
    subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), args.bpe, d, "--pad", "sd1"],
                   check=True, capture_output=True)
    tok = CLIPTokenizer.from_pretrained(d)
    # A1111 registers only the embedding of the model's shape (64 + 128): tinyxl, 2 vectors
    write_cases(OUT, pp, tok, {"tinyxl": emb}, CASES)

    g = torch.Generator().manual_seed(78)
    uneven = {
        "tinyshort": {"clip_l": torch.randn(1, 64, generator=g) * 0.3, "clip_g": torch.randn(3, 128, generator=g) * 0.3},
        "tinylong": {"clip_l": torch.randn(4, 64, generator=g) * 0.3, "clip_g": torch.randn(2, 128, generator=g) * 0.3},
    }
    os.makedirs(os.path.join(OUT_UNEVEN, "emb"), exist_ok=True)
    for name, parts in uneven.items():
        save_file(parts, os.path.join(OUT_UNEVEN, "emb", f"{name}.safetensors"))
    write_cases(OUT_UNEVEN, pp, tok, uneven, UNEVEN_CASES)


def write_cases(out, pp, tok, embeddings, case_list):
    """conditioning.safetensors + cases.json in `out`: A1111's SDXL conditioning of each case with
    `embeddings` (name -> {clip_l, clip_g}), `vectors` = clip_g's count."""
    tokenize_line = make_chunker(pp, tok, [(n, e["clip_g"].shape[0]) for n, e in embeddings.items()])
    _, _, te1, te2 = build("sdxl")
    encoders = [FixedEncoder(te1, False, tokenize_line, {n: e["clip_l"] for n, e in embeddings.items()}),
                FixedEncoder(te2, True, tokenize_line, {n: e["clip_g"] for n, e in embeddings.items()})]
    tensors, cases = {}, []
    with torch.no_grad():
        for i, (texts, width, height) in enumerate(case_list):
            ctx, vec = conditioner(encoders, texts, [height, width, 0, 0, height, width], False)
            tensors[f"c{i}_context"], tensors[f"c{i}_vector"] = ctx.contiguous(), vec.contiguous()
            cases.append({"texts": texts, "width": width, "height": height})
            print(out, i, list(ctx.shape), list(vec.shape))
    save_file(tensors, os.path.join(out, "conditioning.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_embedding_fixtures.py", "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
