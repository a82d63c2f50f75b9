#!/usr/bin/env python3
"""Fixtures for crates/sumi-sampling/tests/fixtures (small, committed; cargo test never runs Python).

Usage: tools/reference/.venv/bin/python tools/reference/make_sampling_fixtures.py [OUT_DIR]

Writes:
  rng.json        torch CPU randn and A1111 Philox ("NV") draws, bit patterns + hashes
  schedules.json  A1111 schedule types (eps and v models), sigma <-> t
  samplers.safetensors  k-diffusion trajectories on a Gaussian-mixture denoiser
  a1111.safetensors     A1111 noise plumbing: ImageRNG cases, DPM++ SDE Karras and Euler a runs
  seed_sequence.json    numpy SeedSequence states (the Brownian tree's child seeds)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sampling_rng_fixtures  # noqa: E402
import sampling_schedule_fixtures  # noqa: E402
import sampling_sampler_fixtures  # noqa: E402
import sampling_a1111_fixtures  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "crates/sumi-sampling/tests/fixtures")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "rng.json"), sampling_rng_fixtures.make())
    write_json(os.path.join(out, "schedules.json"), sampling_schedule_fixtures.make())
    write_json(os.path.join(out, "seed_sequence.json"), sampling_sampler_fixtures.seed_sequence_cases())
    path = os.path.join(out, "samplers.safetensors")
    save_file(sampling_sampler_fixtures.make(), path)
    print("wrote", path, os.path.getsize(path), "bytes")
    path = os.path.join(out, "a1111.safetensors")
    save_file(sampling_a1111_fixtures.make(), path)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
