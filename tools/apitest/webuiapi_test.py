"""Drives a running `sumi serve` with the `webuiapi` client (PyPI 0.9.17), as A1111 users do:
txt2img, img2img (with and without a mask), model listing and switching, progress with a
preview, interrupt, png-info and the listing endpoints.

Usage: webuiapi_test.py --port PORT --init-image PNG --other-model NAME
Exits 0 when every check passes; prints one line per check.
"""

import argparse
import sys
import threading
import time

import webuiapi
from PIL import Image

CHECKS = []


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn

    return wrap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--init-image", required=True)
    ap.add_argument("--other-model", required=True)
    args = ap.parse_args()
    api = webuiapi.WebUIApi(host=args.host, port=args.port, sampler="Euler a", steps=3)
    ctx = {"api": api, "args": args}
    failed = 0
    for name, fn in CHECKS:
        try:
            fn(ctx)
            print(f"ok   {name}")
        except Exception as e:  # report every failing check, then fail
            failed += 1
            print(f"FAIL {name}: {e!r}")
    print(f"webuiapi: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


@check("txt2img: counts, sizes, seeds, infotext in the PNGs")
def txt2img(ctx):
    api = ctx["api"]
    r = api.txt2img(prompt="a (red:1.2) apple", negative_prompt="blurry", seed=42,
                    width=64, height=64, batch_size=2, n_iter=2)
    assert len(r.images) == 4, len(r.images)
    assert all(im.size == (64, 64) for im in r.images)
    assert r.info["all_seeds"] == [42, 43, 44, 45], r.info["all_seeds"]
    assert r.info["sampler_name"] == "Euler a", r.info["sampler_name"]
    for i, im in enumerate(r.images):
        assert im.info["parameters"] == r.info["infotexts"][i]
        assert f"Seed: {42 + i}" in im.info["parameters"]
    assert r.parameters["seed"] == 42
    assert r.parameters["prompt"] == "a (red:1.2) apple"
    ctx["png"] = r.images[0]


@check("img2img: with and without a mask")
def img2img(ctx):
    api = ctx["api"]
    init = Image.open(ctx["args"].init_image)
    r = api.img2img(images=[init], prompt="a cat", seed=5, width=64, height=64,
                    denoising_strength=0.6)
    assert len(r.images) == 1 and r.images[0].size == (64, 64)
    assert r.info["denoising_strength"] == 0.6
    assert "Denoising strength: 0.6" in r.info["infotexts"][0]
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (0, 0, init.size[0] // 2, init.size[1]))
    r = api.img2img(images=[init], mask_image=mask, prompt="a dog", seed=6, width=64,
                    height=64, batch_size=2, inpaint_full_res=False)
    assert len(r.images) == 2 and all(im.size == (64, 64) for im in r.images)
    assert r.info["all_seeds"] == [6, 7]


@check("png-info reads the infotext back")
def png_info(ctx):
    r = ctx["api"].png_info(ctx["png"])
    assert r.info == ctx["png"].info["parameters"], r.info
    assert r.json["parameters"]["Seed"] == "42"


@check("models: listing and switching")
def models(ctx):
    api = ctx["api"]
    names = api.util_get_model_names()
    assert len(names) >= 2, names
    current = api.util_get_current_model()
    assert current in names, (current, names)
    other = [n for n in names if n.startswith(ctx["args"].other_model)]
    assert other, names
    api.util_set_model(other[0], find_closest=False)
    assert api.util_get_current_model() == other[0]
    r = api.txt2img(prompt="x", seed=1, width=64, height=64)
    assert r.info["sd_model_name"] == ctx["args"].other_model, r.info["sd_model_name"]
    api.util_set_model(current, find_closest=False)
    assert api.util_get_current_model() == current


@check("progress with a preview, interrupt, idle again")
def progress(ctx):
    api = ctx["api"]
    out = {}
    t = threading.Thread(target=lambda: out.update(r=api.txt2img(
        prompt="slow", seed=9, width=128, height=128, steps=500, n_iter=2)))
    t.start()
    deadline = time.time() + 60
    while True:
        p = api.get_progress()
        if p["state"]["sampling_step"] >= 2:
            break
        assert time.time() < deadline, p
        time.sleep(0.02)
    assert 0 < p["progress"] <= 1, p["progress"]
    assert p["state"]["job_count"] == 2
    assert p["current_image"], "no preview"
    api.interrupt()
    t.join(30)
    assert not t.is_alive(), "interrupt did not stop the job"
    assert len(out["r"].images) == 1
    api.util_wait_for_ready(check_interval=0.2)


@check("listings")
def listings(ctx):
    api = ctx["api"]
    assert "Euler a" in api.util_get_sampler_names()
    assert "karras" in api.util_get_scheduler_names()
    for fn in (api.get_sd_vae, api.get_upscalers, api.get_latent_upscale_modes, api.get_loras,
               api.get_prompt_styles):
        assert isinstance(fn(), list), fn
    for fn in (api.get_options, api.get_cmd_flags, api.get_embeddings, api.get_memory,
               api.get_scripts):
        assert isinstance(fn(), dict), fn
    api.refresh_checkpoints()
    api.skip()


if __name__ == "__main__":
    sys.exit(main())
