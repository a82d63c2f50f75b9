#!/usr/bin/env python3
"""Helpers of tools/bench/upscale.sh.

  upscale.py make OUT_DIR SIZE   a random 4x RRDBNet in Real-ESRGAN's layout (64 features,
                                 23 blocks, growth 32: RealESRGAN_x4plus's sizes) as
                                 OUT_DIR/rrdb_x4.pth, and a random SIZE² image OUT_DIR/in.png
  upscale.py torch OUT_DIR RUNS [TILE OVERLAP]
                                 spandrel's model through A1111's tiled upscale (restated in
                                 tools/reference/make_upscaler_fixtures.py), f32 on the CPU;
                                 prints `pytorch <median seconds> <w>x<h>` after a warm-up
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make(out, size):
    import spandrel
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    m = spandrel.architectures.ESRGAN.ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    sd = {}
    for k, v in m.state_dict().items():
        fan_in = v[0].numel() if v.ndim == 4 else 1
        sd[k] = torch.randn(v.shape) * (0.5 / fan_in ** 0.5) if v.ndim == 4 else torch.randn(v.shape) * 0.01
    torch.save({"params_ema": sd}, os.path.join(out, "rrdb_x4.pth"))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC).save(os.path.join(out, "in.png"))


def bench(out, runs, tile, overlap):
    from make_upscaler_fixtures import upscale_with_model  # first: it picks Pillow 9.5.0
    import spandrel
    from PIL import Image
    torch.set_grad_enabled(False)
    desc = spandrel.ModelLoader().load_from_file(os.path.join(out, "rrdb_x4.pth"))
    model = desc.model.eval()
    img = Image.open(os.path.join(out, "in.png")).convert("RGB")
    res = upscale_with_model(model, img, tile_size=tile, tile_overlap=overlap)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        res = upscale_with_model(model, img, tile_size=tile, tile_overlap=overlap)
        times.append(time.perf_counter() - t)
    res.save(os.path.join(out, "torch.png"))
    print(f"pytorch {statistics.median(times):.3f} {res.width}x{res.height}")


if __name__ == "__main__":
    cmd, out = sys.argv[1], sys.argv[2]
    if cmd == "make":
        make(out, int(sys.argv[3]))
    else:
        extra = [int(a) for a in sys.argv[4:6]] or [192, 8]
        bench(out, int(sys.argv[3]), *extra)
