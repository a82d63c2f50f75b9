#!/usr/bin/env python3
"""Reference conditioning tensors for crates/sumi-pipeline/tests/conditioning.rs, computed the way
A1111 v1.10.1 does on the tiny SD1 and SD2-v text encoders of fixtures/tiny, plus the
textual-inversion files the tests read.

The text encoders are built exactly as tools/reference/make_tiny_models.py builds them
(transformers CLIPTextModel, weights synth_weights.synth(canonical name)); the tests rebuild the
same weights from fixtures/tiny/<arch>/manifest.json.

What follows A1111 (transcribed below, default options unless a case says otherwise):
  * prompt_parser.get_multicond_prompt_list / get_learned_conditioning_prompt_schedules /
    parse_prompt_attention: A1111's own functions, imported from --a1111 DIR;
  * sd_hijack_clip.TextConditionalModel.tokenize_line: make_prompt_fixtures.make_chunker;
  * TextConditionalModel.forward / process_tokens: chunk i of every schedule text in one batch,
    empty chunks for shorter texts, SD2 ids after the first end token set to 0;
  * sd_hijack.EmbeddingsWithFixes: vectors written from offset + 1, cut at the chunk's end;
  * FrozenCLIPEmbedderWithCustomWords.encode_with_transformers (SD1: CLIP skip n reads
    hidden_states[-n] through final_layer_norm); FrozenOpenCLIPEmbedder (SD2: layer
    "penultimate", CLIP skip ignored);
  * sd_emphasis: Original (z * multipliers, then z * (mean before / mean after) over the whole
    batch tensor; the means accumulated in float64, see process_tokens), No norm, Ignore, None
    (no attention parsing at all);
  * textual_inversion.create_embedding_from_data for the embedding files written here.

Writes fixtures/embeddings/*.{safetensors,pt,bin} and fixtures/conditioning/{cases.json,
conditioning.safetensors}.

Usage: make_conditioning_fixtures.py --a1111 DIR   (DIR holds modules/prompt_parser.py of
A1111 v1.10.1; see make_prompt_fixtures.py)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_prompt_fixtures import extra_networks, make_chunker  # noqa: E402
from synth_weights import synth  # noqa: E402

torch.set_num_threads(2)
HID = 64
CLIP_LAYERS = 3
EMB_DIR = os.path.join(ROOT, "fixtures", "embeddings")
OUT = os.path.join(ROOT, "fixtures", "conditioning")


def text_encoder(arch):
    """The tiny CLIP of make_tiny_models.build (SD2: the open_clip-sized model, one extra layer)."""
    from transformers import CLIPTextConfig, CLIPTextModel
    sd2 = arch.startswith("sd2")
    layers = CLIP_LAYERS + (1 if sd2 else 0)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=HID, intermediate_size=4 * HID, num_attention_heads=HID // 64,
        num_hidden_layers=layers, max_position_embeddings=77, hidden_act="gelu" if sd2 else "quick_gelu",
        layer_norm_eps=1e-5, projection_dim=HID, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=0 if sd2 else 49407))
    with torch.no_grad():
        for k, p in te.state_dict().items():
            if k.endswith("position_ids"):
                continue
            name = "text_encoder." + (k[len("text_model."):] if k.startswith("text_model.") else k)
            p.copy_(torch.from_numpy(synth(name, list(p.shape)).astype(np.float32)))
    return te.eval()


# ------------------------------------------------------------------ embedding files
class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def vec(name, n):
    return torch.from_numpy(synth("embedding." + name, [n, HID]).astype(np.float32))


def write_embeddings():
    """Every format A1111 reads, plus files it refuses. Returns the usable ones by name."""
    os.makedirs(EMB_DIR, exist_ok=True)
    for f in os.listdir(EMB_DIR):
        os.remove(os.path.join(EMB_DIR, f))
    good = {}
    # kohya / A1111 safetensors: one tensor under emb_params
    good["tinyemb"] = vec("tinyemb", 3)
    save_file({"emb_params": good["tinyemb"]}, os.path.join(EMB_DIR, "tinyemb.safetensors"))
    # A1111's own .pt format (Embedding.save)
    good["tinypt"] = vec("tinypt", 2)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": good["tinypt"].clone()},
                "name": "tinypt", "step": 1500, "sd_checkpoint": None, "sd_checkpoint_name": None},
               os.path.join(EMB_DIR, "tinypt.pt"))
    # the original textual-inversion layout: string_to_param a torch.nn.ParameterDict, the
    # parameter a non-contiguous (transposed) view
    base = vec("tinydict", 2).t().contiguous()          # [64, 2]
    pd = torch.nn.ParameterDict({"*": torch.nn.Parameter(base.t(), requires_grad=False)})
    good["tinydict"] = base.t().clone()
    torch.save({"string_to_token": {"*": 265}, "string_to_param": pd, "step": 7},
               os.path.join(EMB_DIR, "tinydict.pt"))
    # a diffusers concept: {"<token>": 1-D tensor}, stored in f16
    v = vec("tinyconcept", 1)[0].half()
    good["tinyconcept"] = v.float().reshape(1, HID)
    torch.save({"<tiny-concept>": v}, os.path.join(EMB_DIR, "tinyconcept.bin"))
    # refused or skipped
    save_file({"emb_params": torch.zeros(2, 768)}, os.path.join(EMB_DIR, "wide.safetensors"))
    save_file({"a": torch.zeros(1, HID), "b": torch.zeros(1, HID)}, os.path.join(EMB_DIR, "twoterms.safetensors"))
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, os.path.join(EMB_DIR, "xlemb.safetensors"))
    torch.save(vec("bare", 1), os.path.join(EMB_DIR, "bare.pt"))
    torch.save({"string_to_param": {"*": Evil()}}, os.path.join(EMB_DIR, "evil.pt"))
    open(os.path.join(EMB_DIR, "empty.pt"), "wb").close()
    open(os.path.join(EMB_DIR, "notes.txt"), "w").write("not an embedding\n")
    # a preview image (A1111 passes over it) and an image that might hold an embedding (A1111
    # reads those; Sumi lists it as skipped)
    for name in ("tinyemb.preview.png", "pictured.png"):
        open(os.path.join(EMB_DIR, name), "wb").write(b"\x89PNG\r\n\x1a\nxx")
    return good


# ------------------------------------------------------------------ A1111's conditioning
class Fixes(torch.nn.Module):
    """sd_hijack.EmbeddingsWithFixes around the token embedding."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped
        self.fixes = None

    def forward(self, input_ids):
        batch_fixes, self.fixes = self.fixes, None
        inputs_embeds = self.wrapped(input_ids)
        if batch_fixes is None or len(batch_fixes) == 0 or max(len(x) for x in batch_fixes) == 0:
            return inputs_embeds
        vecs = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                emb = embedding.to(tensor.dtype)
                emb_len = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[0:offset + 1], emb[0:emb_len], tensor[offset + 1 + emb_len:]])
            vecs.append(tensor)
        return torch.stack(vecs)


class Conditioner:
    def __init__(self, arch, tok, pp, embeddings, emphasis, clip_skip):
        self.te = text_encoder(arch)
        # transformers 5 has no `text_model` level; older versions do
        self.tm = getattr(self.te, "text_model", self.te)
        self.fixes = Fixes(self.tm.embeddings.token_embedding)
        self.tm.embeddings.token_embedding = self.fixes
        self.sd2 = arch.startswith("sd2")
        self.emphasis, self.clip_skip = emphasis, clip_skip
        self.id_start, self.id_end = 49406, 49407
        self.id_pad = 0 if self.sd2 else 49407
        self.vectors = embeddings
        if emphasis == "None":
            class NoParse:
                @staticmethod
                def parse_prompt_attention(line):
                    return [[line, 1.0]]
            parser = NoParse
        else:
            parser = pp
        self.tokenize_line = make_chunker(parser, tok, [(n, v.shape[0]) for n, v in embeddings.items()])

    def empty_chunk(self):
        return [self.id_start] + [self.id_end] * 76, [1.0] * 77, []

    def encode_with_transformers(self, tokens):
        out = self.te(input_ids=tokens, output_hidden_states=True)
        if self.sd2:   # FrozenOpenCLIPEmbedder, layer "penultimate": all but the last block, ln_final
            return self.tm.final_layer_norm(out.hidden_states[-2])
        if self.clip_skip > 1:
            return self.tm.final_layer_norm(out.hidden_states[-self.clip_skip])
        return out.last_hidden_state

    def process_tokens(self, batch_tokens, batch_multipliers):
        tokens = torch.asarray(batch_tokens)
        if self.id_end != self.id_pad:
            for b in range(len(batch_tokens)):
                index = batch_tokens[b].index(self.id_end)
                tokens[b, index + 1:tokens.shape[1]] = self.id_pad
        z = self.encode_with_transformers(tokens)
        multipliers = torch.asarray(batch_multipliers)
        if self.emphasis == "Original":
            # A1111 takes z.mean() in the model's dtype. The means are accumulated in float64
            # here (and in Sumi): on the tiny encoder the mean of z is ~2e-4 against |z| ~0.8,
            # so an f32 sum's rounding (which also differs between CPU and CUDA) moves the
            # ratio by up to 1e-4 relative; real encoders' means are far from zero
            original_mean = z.mean(dtype=torch.float64).float()
            z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
            new_mean = z.mean(dtype=torch.float64).float()
            z = z * (original_mean / new_mean)
        elif self.emphasis == "No norm":
            z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
        return z

    def forward(self, texts):
        cache, batch_chunks = {}, []
        for line in texts:
            if line not in cache:
                cache[line] = self.tokenize_line(line)[0]
            batch_chunks.append(cache[line])
        zs = []
        for i in range(max(len(x) for x in batch_chunks)):
            batch = [(c[i].tokens, c[i].multipliers, c[i].fixes) if i < len(c) else self.empty_chunk()
                     for c in batch_chunks]
            self.fixes.fixes = [[(o, self.vectors[name]) for o, name in f] for _, _, f in batch]
            zs.append(self.process_tokens([t for t, _, _ in batch], [m for _, m, _ in batch]))
        return torch.hstack(zs)


def conditioning(cond, pp, prompt, steps, negative):
    """get_multicond_learned_conditioning (positive) or get_learned_conditioning (negative) for
    one prompt: [(weight, [(end_step, tensor)])]."""
    if negative:
        flat, indexes = [prompt], [(0, 1.0)]
    else:
        # processing.py removes the extra networks (extra_networks.parse_prompts) first
        prompt, _ = extra_networks(prompt)
        res_indexes, flat, _ = pp.get_multicond_prompt_list([prompt])
        indexes = res_indexes[0]
    schedules = pp.get_learned_conditioning_prompt_schedules(flat, steps)
    learned = []
    for sched in schedules:
        z = cond.forward([text for _, text in sched])
        learned.append([(end, z[i]) for i, (end, _) in enumerate(sched)])
    return [(w, learned[i]) for i, w in indexes]


CASES = [
    # arch, emphasis, clip_skip, steps, negative, prompt
    ("sd1", "Original", 1, 20, False, "a photo of a (cat:1.3) on a [blurry] hill, masterpiece"),
    ("sd1", "Original", 2, 20, False, "a photo of a (cat:1.3) on a [blurry] hill, masterpiece"),
    ("sd1", "No norm", 1, 20, False, "a photo of a (cat:1.3) on a [blurry] hill, masterpiece"),
    ("sd1", "No norm", 2, 20, False, "(masterpiece:1.2), best quality, ((monochrome)) BREAK [[sketch]], lineart"),
    ("sd1", "Ignore", 1, 20, False, "(masterpiece:1.2), best quality, ((monochrome)) BREAK [[sketch]], lineart"),
    ("sd1", "None", 1, 20, False, "(masterpiece:1.2), best quality, ((monochrome)) BREAK [[sketch]], lineart"),
    ("sd1", "Original", 1, 20, False, "(masterpiece:1.2), best quality, ((monochrome)) BREAK [[sketch]], lineart"),
    # two chunks with the comma backtrack, emphasis spread over both
    ("sd1", "Original", 1, 20, False,
     ", ".join(["(red flowers:1.1)", "a tall tree", "[fog]", "mountains in the distance", "a small house"] * 6)),
    ("sd1", "Original", 2, 20, False,
     ", ".join(["(red flowers:1.1)", "a tall tree", "[fog]", "mountains in the distance", "a small house"] * 6)),
    # embeddings: safetensors (3 vectors), A1111 .pt (2), ParameterDict .pt (2), diffusers concept (1)
    ("sd1", "Original", 1, 20, False, "a portrait in tinyemb style, (tinypt:1.2), [tinydict] and tinyconcept"),
    ("sd1", "No norm", 2, 20, False, "a portrait in tinyemb style, (tinypt:1.2), [tinydict] and tinyconcept"),
    # an embedding pushed into the second chunk, a BREAK after it
    ("sd1", "Original", 1, 20, False, "word " * 73 + "tinyemb BREAK tinypt"),
    # prompt editing: both texts encoded in one batch (one mean over both), different chunk counts
    ("sd1", "Original", 1, 10, False, "a [cat:dog:0.5] on a (hill:1.2)"),
    ("sd1", "Original", 1, 10, False, "[" + "long (text:1.3) " * 40 + ":short [text]:3] end"),
    ("sd1", "Original", 1, 4, False, "a [red|(blue:1.4)] ball"),
    # AND with weights, an extra network removed, a repeated part
    ("sd1", "Original", 1, 10, False, "<lora:x:0.5>a cat AND a (dog:1.2):0.7 AND a cat:-0.3"),
    # negatives: no AND split, extra networks kept
    ("sd1", "Original", 1, 10, True, "lowres, (bad hands:1.3) AND text, <lora:x:1>"),
    # SD2: ids after the first end token are 0; CLIP skip ignored
    ("sd2-v", "Original", 1, 20, False, "a photo of a (cat:1.3) on a [blurry] hill, masterpiece BREAK tinyemb"),
    ("sd2-v", "Original", 2, 20, False, "a photo of a (cat:1.3) on a [blurry] hill, masterpiece BREAK tinyemb"),
    ("sd2-v", "No norm", 1, 10, False,
     "[" + ", ".join(["(red flowers:1.1)", "a tall tree", "[fog]"] * 12) + ":tinypt:4] AND a dog:0.5"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a1111", required=True, help="dir with modules/prompt_parser.py (A1111 v1.10.1)")
    ap.add_argument("--bpe", default=os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.abspath(args.a1111), "modules"))
    import prompt_parser as pp
    from transformers import CLIPTokenizer

    d = os.path.join(tempfile.mkdtemp(), "tok")
    subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), args.bpe, d, "--pad", "sd1"],
                   check=True, capture_output=True)
    # SD1 and SD2 prompts tokenize alike here (open_clip's tokenizer differs only on HTML
    # entities and ftfy repairs, absent from these prompts); SD2's padding is applied above
    tok = CLIPTokenizer.from_pretrained(d)

    good = write_embeddings()
    os.makedirs(OUT, exist_ok=True)
    tensors, cases = {}, []
    with torch.no_grad():
        for i, (arch, emphasis, skip, steps, negative, prompt) in enumerate(CASES):
            cond = Conditioner(arch, tok, pp, good, emphasis, skip)
            parts = []
            for j, (w, sched) in enumerate(conditioning(cond, pp, prompt, steps, negative)):
                entries = []
                for k, (end, z) in enumerate(sched):
                    key = f"c{i}_p{j}_e{k}"
                    tensors[key] = z.float().contiguous()
                    entries.append({"end_step": end, "tensor": key})
                parts.append({"weight": w, "schedule": entries})
            cases.append({"arch": arch, "emphasis": emphasis, "clip_skip": skip, "steps": steps,
                          "negative": negative, "prompt": prompt, "parts": parts})
            shapes = [[list(tensors[e["tensor"]].shape) for e in p["schedule"]] for p in parts]
            print(i, arch, emphasis, skip, shapes)
    save_file(tensors, os.path.join(OUT, "conditioning.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_conditioning_fixtures.py",
                   "embeddings": {n: list(v.shape) for n, v in good.items()}, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
