#!/usr/bin/env python3
"""Fixtures for the four samplers A1111 v1.10.1 lists beyond the others: DPM fast,
DPM adaptive, Restart and DDIM CFG++ (crates/sumi-sampling/tests/extra_samplers.rs).

Usage: tools/reference/.venv/bin/python tools/reference/sampling_extra_sampler_fixtures.py [OUT]
(default OUT: crates/sumi-sampling/tests/fixtures/samplers_extra.safetensors)

Same denoiser and inputs as sampling_sampler_fixtures.py (the exact Gaussian-mixture
MMSE denoiser, x_T from seed 42, init from seed 7). Noise: A1111 leaves these samplers'
`torch.randn_like` to its TorchHijack (the image RNG's next draw); here every draw is
`torch.randn(SHAPE)` from one CPU generator seeded 1234, which the Rust test reproduces.

- DPM fast / DPM adaptive: k-diffusion 0.1.1.post1's own sample_dpm_fast /
  sample_dpm_adaptive, called with the arguments A1111's KDiffusionSampler passes:
  txt2img sigma_min/sigma_max of the model (n = steps), x = noise * sigmas[0] of the
  default (uniform) schedule; img2img sigma_min = sigma_sched[-2], sigma_max =
  sigma_sched[0], n = len(sigma_sched) - 1 on the sliced schedule; eta = 1 (A1111's
  eta_ancestral default), s_noise = 1.
- Restart: A1111's modules/sd_samplers_extra.py restart_sampler, restated below from
  its semantics, on the Karras schedule (its default scheduler).
- DDIM CFG++: A1111's sd_samplers_timesteps_impl.ddim_cfgpp restated, with a CFG
  denoiser whose uncond prediction is 0.7 x the mixture's and cond the mixture's,
  guidance 7 multiplied by 1/12.5, the direction term on the unconditional epsilon.
"""
import os
import sys

import torch
from k_diffusion import sampling as K
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sampling_sampler_fixtures import SHAPE, STRENGTH, gmm_denoiser  # noqa: E402
from sampling_schedule_fixtures import model_wrap  # noqa: E402


def inputs():
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.3
    return x_T, init


class Draws:
    """torch.randn(SHAPE) from a generator seeded 1234, counted."""

    def __init__(self):
        self.g = torch.Generator().manual_seed(1234)
        self.n = 0

    def __call__(self, *_):
        self.n += 1
        return torch.randn(SHAPE, generator=self.g)


def restart_a1111(model, x, sigmas, randn, s_noise=1.0, callback=None):
    """A1111 v1.10.1 restart_sampler with its automatic restart list, restated."""
    steps = len(sigmas) - 1
    restart = {}
    if steps >= 20:
        r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = K.get_sigmas_karras(steps - r_steps * r_times, sigmas[-2].item(), sigmas[0].item())
        restart = {int(torch.argmin(abs(sigmas - 0.1), dim=0)): (r_steps + 1, r_times, 2)}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart:
            n_steps, times, s_max = restart[i + 1]
            lo, hi = i + 1, int(torch.argmin(abs(sigmas - s_max), dim=0))
            if hi < lo:
                seg = K.get_sigmas_karras(n_steps, sigmas[lo].item(), sigmas[hi].item())[:-1]
                for _ in range(times):
                    pairs.extend(zip(seg[:-1], seg[1:]))
    s_in = x.new_ones([x.shape[0]])
    last = None
    for step_id, (old, new) in enumerate(pairs):
        if last is not None and last < old:
            x = x + randn() * s_noise * (old ** 2 - last ** 2) ** 0.5
        denoised = model(x, old * s_in)
        d = K.to_d(x, old, denoised)
        if callback is not None:
            callback({'x': x, 'i': step_id, 'denoised': denoised})
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = K.to_d(x_2, new, model(x_2, new * s_in))
            x = x + (d + d_2) / 2 * dt
        last = new
    return x, len(pairs)


class CfgPP:
    """A1111's CFGDenoiserTimesteps in CFG++ mode over two mixture denoisers:
    returns the guided epsilon and keeps last_noise_uncond."""

    def __init__(self, inner, cfg_scale):
        self.ac = inner.inner_model.alphas_cumprod
        self.sigmas = inner.sigmas
        self.cfg_scale = cfg_scale
        self.cond_scale_multiplier = 1 / 12.5
        self.last_noise_uncond = None

    def __call__(self, x, t):
        a_t = float(self.ac[t])
        sigma = self.sigmas[t]
        x_ve = x / a_t ** 0.5
        d = gmm_denoiser(x_ve, sigma)
        eps_c = (x_ve - d) / sigma
        eps_u = (x_ve - d * 0.7) / sigma
        self.last_noise_uncond = eps_u.clone()
        return eps_u + (eps_c - eps_u) * (self.cfg_scale * self.cond_scale_multiplier)


def ddim_cfgpp_a1111(model, x, timesteps, ac, eta, randn, callback):
    """A1111 v1.10.1 ddim_cfgpp, restated (alphas in float32, prev in float64)."""
    alphas = ac[timesteps]
    alphas_prev = ac[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].double()
    sqrt_one_minus = torch.sqrt(1 - alphas)
    sig = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas.double()) * (1 - alphas.double() / alphas_prev))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, int(timesteps[index]))
        e_u = model.last_noise_uncond
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        sigma_t = sig[index].item()
        pred_x0 = (x - sqrt_one_minus[index].item() * e_t) / a_t ** 0.5
        x = a_prev ** 0.5 * pred_x0 + (1. - a_prev - sigma_t ** 2) ** 0.5 * e_u + sigma_t * randn()
        callback(x.clone())
    return x


def run_k(fn, x, **kw):
    traj = []
    draws = Draws()
    with torch.no_grad():
        out = fn(gmm_denoiser, x, callback=lambda d: traj.append(d["x"].clone()), disable=True,
                 noise_sampler=draws, **kw)
    info = None
    if isinstance(out, tuple):
        out, info = out
    return out, traj, draws.n, info


def dpm_cases(t):
    inner = model_wrap(False)
    x_T, init = inputs()
    smin, smax = inner.sigmas[0].item(), inner.sigmas[-1].item()
    cases = [("fast", 8, 1.0), ("fast", 9, 1.0), ("fast", 10, 1.0), ("fast", 8, 0.0),
             ("adaptive", 8, 1.0), ("adaptive", 8, 0.0)]
    for kind, steps, eta in cases:
        sig = inner.get_sigmas(steps)
        t_enc = int(min(STRENGTH, 0.999) * steps)
        sched = sig[steps - t_enc - 1:]
        for mode in ("txt2img", "img2img"):
            if mode == "txt2img":
                x, lo, hi, n = x_T * sig[0], smin, smax, steps
            else:
                x, lo, hi, n = init + x_T * sched[0], sched[-2], sched[0], len(sched) - 1
            key = f"dpm_{kind}/{steps}/eta{eta}/{mode}"
            if kind == "fast":
                out, traj, n_draws, _ = run_k(K.sample_dpm_fast, x, sigma_min=lo, sigma_max=hi, n=n, eta=eta)
            else:
                out, traj, n_draws, info = run_k(K.sample_dpm_adaptive, x, sigma_min=lo, sigma_max=hi, eta=eta,
                                                 return_info=True)
                t[key + "/info"] = torch.tensor([info["steps"], info["nfe"], info["n_accept"], info["n_reject"]])
                print(key, info)
            t[key + "/range"] = torch.tensor([float(lo), float(hi), float(n)])
            t[key + "/out"] = out
            t[key + "/traj"] = torch.stack(traj)
            t[key + "/draws"] = torch.tensor([n_draws])


def restart_cases(t):
    inner = model_wrap(False)
    x_T, init = inputs()
    smin, smax = inner.sigmas[0].item(), inner.sigmas[-1].item()
    for steps in (8, 20, 36, 40):
        sig = K.get_sigmas_karras(steps, smin, smax)
        t[f"restart/{steps}/sigmas"] = sig
        t_enc = int(min(STRENGTH, 0.999) * steps)
        sched = sig[steps - t_enc - 1:]
        for mode, x, sigmas in (("txt2img", x_T * sig[0], sig), ("img2img", init + x_T * sched[0], sched)):
            traj = []
            draws = Draws()
            with torch.no_grad():
                out, n_steps = restart_a1111(gmm_denoiser, x, sigmas, draws,
                                             callback=lambda d: traj.append(d["x"].clone()))
            key = f"restart/{steps}/{mode}"
            print(key, "heun steps", n_steps, "draws", draws.n)
            t[key + "/out"] = out
            t[key + "/traj"] = torch.stack(traj)
            t[key + "/draws"] = torch.tensor([draws.n])


def ddim_cfgpp_cases(t):
    inner = model_wrap(False)
    ac = inner.inner_model.alphas_cumprod
    x_T, init = inputs()
    steps = 10
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    for eta in (0.0, 0.5):
        for mode in ("txt2img", "img2img"):
            if mode == "txt2img":
                x, ts = x_T, timesteps
            else:
                t_enc = int(min(STRENGTH, 0.999) * steps)
                ts = timesteps[:t_enc]
                a = ac[timesteps[t_enc]]
                x = init * torch.sqrt(a) + x_T * torch.sqrt(1 - a)
            traj = []
            draws = Draws()
            with torch.no_grad():
                out = ddim_cfgpp_a1111(CfgPP(inner, 7.0), x, ts, ac, eta, draws, traj.append)
            key = f"ddim_cfgpp/eta{eta}/{mode}"
            t[key + "/out"] = out
            t[key + "/traj"] = torch.stack(traj)
            t[key + "/draws"] = torch.tensor([draws.n])


def make():
    x_T, init = inputs()
    t = {"x_T": x_T, "init": init}
    dpm_cases(t)
    restart_cases(t)
    ddim_cfgpp_cases(t)
    return {k: v.contiguous().float() for k, v in t.items()}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        root, "crates/sumi-sampling/tests/fixtures/samplers_extra.safetensors")
    save_file(make(), out)
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
