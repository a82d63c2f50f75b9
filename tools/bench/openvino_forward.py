#!/usr/bin/env python3
"""OpenVINO side of tools/bench/run.sh: the same work as Sumi's `forward` bench and
torch_forward.py, on the same weights (the diffusers folder written by make_full_sd15.py): the
diffusers U-Net / VAE decoder converted with `ov.convert_model` at the bench's static shapes
(U-Net: batch 2, 64x64 latent, 77 tokens; VAE: one 64x64 latent), compiled for the CPU with
INFERENCE_PRECISION_HINT f32 or bf16, 2 threads (INFERENCE_NUM_THREADS), the LATENCY hint.
The converted model is cached as OpenVINO IR beside the diffusers folder (converting, in a
child process, is neither timed nor in the peak RSS; loading the IR and compiling is `load_s`).

Prints one JSON line: runs_s, load_s, peak_rss_kib, and `precision`: the inference precision
the compiled model reports it runs (it must be bf16 for the bf16 lines; a CPU without bf16
support falls back to f32 and says so here).

LATENT (U-Net only): the latent's side, default 64 (96 = 768², 128 = 1024²). The 64 model is
cached as above; another size is converted for this run only (its IR is written beside the
cached one, compiled, and deleted again: ~3.4 GB of disk while the line runs).

Usage: openvino_forward.py unet-f32|unet-bf16|vae-decode-f32|vae-decode-bf16 DIFFUSERS_DIR RUNS [LATENT]
       (run.sh's size lines unet-PREC-PIXELS, e.g. unet-bf16-768, are unet-PREC at PIXELS/8)
"""
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import openvino as ov


def convert(what, d, ir, lat=64):
    """The diffusers module as OpenVINO IR at the bench's shapes (U-Net latent `lat`)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.set_num_threads(2)
    if what == "unet":
        m = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet")).eval()

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x, t, c):
                return self.m(x, t, encoder_hidden_states=c).sample

        example = (torch.randn(2, 4, lat, lat), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768))
        with torch.no_grad():
            model = ov.convert_model(Wrap(m), example_input=example,
                                     input=[[2, 4, lat, lat], [2], [2, 77, 768]])
    else:
        m = AutoencoderKL.from_pretrained(os.path.join(d, "vae")).eval()

        class Dec(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, z):
                return self.m.decode(z / 0.18215).sample

        with torch.no_grad():
            model = ov.convert_model(Dec(m), example_input=(torch.randn(1, 4, 64, 64),), input=[[1, 4, 64, 64]])
    ov.save_model(model, ir, compress_to_fp16=False)


def main():
    if sys.argv[1] == "--convert":
        convert(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    what, d, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lat = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    if what.startswith("unet-") and what.count("-") == 2:  # run.sh's unet-bf16-768: 768² images
        what, px = what.rsplit("-", 1)
        lat = int(px) // 8
    net, prec = what.rsplit("-", 1)
    net = "unet" if net == "unet" else "vae"
    if net != "unet" and lat != 64:
        sys.exit("LATENT is for the U-Net only")
    transient = lat != 64
    ir = os.path.join(d, f"openvino_{net}_{lat}.xml" if transient else f"openvino_{net}.xml")
    if not os.path.exists(ir):
        # in a child process, so that converting's memory is not in this one's peak RSS
        subprocess.run([sys.executable, "-W", "ignore", __file__, "--convert", net, d, ir, str(lat)],
                       check=True)
    t0 = time.perf_counter()
    core = ov.Core()
    try:
        compiled = core.compile_model(ir, "CPU", {
            "INFERENCE_PRECISION_HINT": prec,
            "INFERENCE_NUM_THREADS": int(os.environ.get("BENCH_THREADS", "2")),
            "PERFORMANCE_HINT": "LATENCY",
        })
    finally:
        if transient:
            for f in (ir, ir[:-4] + ".bin"):
                if os.path.exists(f):
                    os.remove(f)
    load = time.perf_counter() - t0
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    ran = ran.to_string() if hasattr(ran, "to_string") else str(ran)
    rng = np.random.default_rng(0)
    if net == "unet":
        inputs = [rng.standard_normal((2, 4, lat, lat), dtype=np.float32),
                  np.array([500.0, 500.0], dtype=np.float32),
                  rng.standard_normal((2, 77, 768), dtype=np.float32)]
    else:
        inputs = [rng.standard_normal((1, 4, 64, 64), dtype=np.float32)]
    req = compiled.create_infer_request()
    req.infer(inputs)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        req.infer(inputs)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"load_s": load, "runs_s": times, "peak_rss_kib": rss, "precision": ran}))


if __name__ == "__main__":
    main()
