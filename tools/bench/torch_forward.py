#!/usr/bin/env python3
"""PyTorch side of tools/bench/run.sh: the same work as Sumi's `forward` bench, on the same
weights (the diffusers folder written by make_full_sd15.py), f32 (or the model cast to bf16
for unet-bf16/vae-decode-bf16), 2 threads.

unet-sdxl-f32/unet-sdxl-bf16 run the SDXL U-Net of make_full_sdxl.py's folder (batch 2, 77
tokens of 2048 context, the text_time ADM input: pooled 1280 + 6 size conditions): loaded as
stored (f16) and cast after loading, so that no f32 copy of the state dict sits beside the
model (PyTorch's peak RSS is then the model's own size plus what a forward needs).

LATENT: the latent's side (default 64 for SD1.5, 128 for SDXL; 96 = 768², 128 = 1024²).

BENCH_LIMIT_S (seconds from the start, load included): where set, a run that has not finished
its warm-up and RUNS passes by then stops and prints `"runs_s": []` with `stopped_after_s`, the
time its passes had taken (a lower bound on one pass when the warm-up was still running).
PyTorch's bf16 on a CPU without bf16 instructions runs at a few GFLOP/s: an SDXL forward would
take hours.

Usage: torch_forward.py unet-f32|unet-bf16|vae-decode-f32|vae-decode-bf16|unet-sdxl-f32|unet-sdxl-bf16
           DIFFUSERS_DIR RUNS [LATENT]   -> one JSON line
"""
import json
import os
import resource
import signal
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel


def main():
    what, d, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sdxl = what.startswith("unet-sdxl-")
    lat = int(sys.argv[4]) if len(sys.argv) > 4 else (128 if sdxl else 64)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dt = torch.bfloat16 if what.endswith("-bf16") else torch.float32
    if what in ("unet-f32", "unet-bf16"):
        m = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), torch_dtype=dt).eval()
        x, t, c = torch.randn(2, 4, lat, lat), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
        x, c = x.to(dt), c.to(dt)
        step = lambda: m(x, t, encoder_hidden_states=c).sample
    elif sdxl:
        m = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), torch_dtype=torch.float16)
        m = m.to(dt).eval()
        x, t, c = torch.randn(2, 4, lat, lat).to(dt), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 2048).to(dt)
        side = float(lat * 8)
        cond = {"text_embeds": torch.randn(2, 1280).to(dt),
                "time_ids": torch.tensor([[side, side, 0.0, 0.0, side, side]] * 2).to(dt)}
        step = lambda: m(x, t, encoder_hidden_states=c, added_cond_kwargs=cond).sample
    elif what in ("vae-decode-f32", "vae-decode-bf16"):
        m = AutoencoderKL.from_pretrained(os.path.join(d, "vae"), torch_dtype=dt).eval()
        z = torch.randn(1, 4, 64, 64).to(dt)
        step = lambda: m.decode(z / 0.18215).sample
    else:
        sys.exit(f"unknown benchmark {what}")
    load = time.perf_counter() - t0
    times = []
    limit = float(os.environ.get("BENCH_LIMIT_S", "0"))
    if limit > 0:
        def stop(*_):
            raise TimeoutError
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, max(limit - load, 1.0))
    t1 = time.perf_counter()
    try:
        with torch.inference_mode():
            step()
            for _ in range(runs):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
    except TimeoutError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"load_s": load, "runs_s": [], "stopped_after_s": time.perf_counter() - t1,
                          "peak_rss_kib": rss}))
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"load_s": load, "runs_s": times, "peak_rss_kib": rss}))


if __name__ == "__main__":
    main()
