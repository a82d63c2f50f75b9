"""Sampler fixtures: k-diffusion trajectories on an exact Gaussian-mixture denoiser.

Data: every latent element is drawn from a 1-D mixture of three Gaussians, so the
exact MMSE denoiser is elementwise and nonlinear:
  D(x, s) = sum_k w_k(x, s) (mu_k + v_k / (v_k + s^2) (x - mu_k)),
  w_k ∝ pi_k N(x; mu_k, v_k + s^2).
It is evaluated in float64 and returned as float32 (the Rust test does the same).

Noise: non-Brownian samplers draw torch.randn(shape) from one CPU generator
(seed 1234), which the Rust port reproduces bit for bit; Brownian samplers use
k-diffusion's BrownianTreeNoiseSampler (torchsde, seed 1234) and every draw is
recorded so it can be replayed.
"""
import math

import numpy as np

import torch
from k_diffusion import sampling as K

from sampling_schedule_fixtures import model_wrap, normal

SHAPE = (1, 2, 4, 4)
PI = [0.3, 0.5, 0.2]
MU = [-1.5, 0.2, 1.8]
STD = [0.3, 0.5, 0.25]
STEPS = 8
STRENGTH = 0.6


def gmm_denoiser(x, sigma, **kw):
    x64 = x.double()
    s2 = float(sigma.reshape(-1)[0]) ** 2
    logw, means = [], []
    for p, m, sd in zip(PI, MU, STD):
        v = sd * sd + s2
        logw.append(math.log(p) - 0.5 * math.log(2 * math.pi * v) - (x64 - m) ** 2 / (2 * v))
        means.append(m + sd * sd / v * (x64 - m))
    lw = torch.stack(logw)
    w = torch.softmax(lw, dim=0)
    return (w * torch.stack(means)).sum(0).float()


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """A1111's LCM sampler (modules/sd_samplers_lcm.py), restated."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


# name -> (function, extra kwargs, noise kind: None | "randn" | "global" | "brownian")
SAMPLERS = {
    "euler": (K.sample_euler, {}, None),
    "euler_churn": (K.sample_euler, {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 10.0, "s_noise": 1.003}, "global"),
    "euler_ancestral": (K.sample_euler_ancestral, {}, "randn"),
    "euler_ancestral_eta": (K.sample_euler_ancestral, {"eta": 0.7, "s_noise": 0.9}, "randn"),
    "heun": (K.sample_heun, {}, None),
    "heun_churn": (K.sample_heun, {"s_churn": 1.0}, "global"),
    "dpm_2": (K.sample_dpm_2, {}, None),
    "dpm_2_ancestral": (K.sample_dpm_2_ancestral, {}, "randn"),
    "lms": (K.sample_lms, {}, None),
    "dpmpp_2s_ancestral": (K.sample_dpmpp_2s_ancestral, {}, "randn"),
    "dpmpp_2m": (K.sample_dpmpp_2m, {}, None),
    "dpmpp_sde": (K.sample_dpmpp_sde, {}, "brownian"),
    "dpmpp_2m_sde": (K.sample_dpmpp_2m_sde, {}, "brownian"),
    "dpmpp_2m_sde_heun": (K.sample_dpmpp_2m_sde, {"solver_type": "heun"}, "brownian"),
    "dpmpp_3m_sde": (K.sample_dpmpp_3m_sde, {}, "brownian"),
    "lcm": (sample_lcm, {}, "randn"),
}


def schedule(name, n, inner):
    smin, smax = inner.sigmas[0].item(), inner.sigmas[-1].item()
    if name == "karras":
        return K.get_sigmas_karras(n, smin, smax)
    if name == "exponential":
        return K.get_sigmas_exponential(n, smin, smax)
    return normal(n, smin, smax, inner)


def run(fn, kwargs, noise_kind, x, sigmas_full, sigmas):
    traj, draws, times, raws = [], [], [], []
    kw = dict(kwargs)
    kw["disable"] = True
    kw["callback"] = lambda d: traj.append(d["x"].clone())
    torch.manual_seed(1234)
    if noise_kind == "randn":
        g = torch.Generator().manual_seed(1234)
        kw["noise_sampler"] = lambda s, sn: torch.randn(SHAPE, generator=g)
    elif noise_kind == "brownian":
        pos = sigmas_full[sigmas_full > 0]
        base = K.BrownianTreeNoiseSampler(x, pos.min(), sigmas_full.max(), seed=1234)

        def ns(s, sn):
            n = base(s, sn)
            draws.append(n.clone())
            times.append(torch.tensor([float(s), float(sn)]))
            raws.append(base.tree(torch.as_tensor(s), torch.as_tensor(sn)).clone())
            return n
        kw["noise_sampler"] = ns
    with torch.no_grad():
        out = fn(gmm_denoiser, x, sigmas, **kw)
    return out, traj, draws, times, raws


def make():
    inner = model_wrap(False)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.3
    t = {"x_T": x_T, "init": init}
    for sched in ("karras", "exponential", "normal"):
        sig = schedule(sched, STEPS, inner)
        t[f"sigmas/{sched}"] = sig
        t_enc = int(min(STRENGTH, 0.999) * STEPS)
        sig_i2i = sig[STEPS - t_enc - 1:]
        for name, (fn, kwargs, noise_kind) in SAMPLERS.items():
            for mode, x, sigmas in (("txt2img", x_T * sig[0], sig), ("img2img", init + x_T * sig_i2i[0], sig_i2i)):
                out, traj, draws, times, raws = run(fn, kwargs, noise_kind, x, sig, sigmas)
                key = f"{name}/{sched}/{mode}"
                t[key + "/out"] = out
                t[key + "/traj"] = torch.stack(traj)
                if draws:
                    t[key + "/draws"] = torch.stack(draws)
                    t[key + "/draw_times"] = torch.stack(times)
                    t[key + "/draws_raw"] = torch.stack(raws)
    t.update(make_ddim())
    t.update(make_unipc())
    return {k: v.contiguous().float() for k, v in t.items()}


def seed_sequence_cases():
    """numpy SeedSequence(entropy, spawn_key, pool_size).generate_state(4) samples."""
    out = []
    for entropy in (0, 1, 1234, 3000000000, 2**32 + 5):
        for spawn_key in ((), (0, 0), (1, 1), (5, 3), (123456, 17)):
            for pool in (4, 24):
                ss = np.random.SeedSequence(entropy=entropy, spawn_key=spawn_key, pool_size=pool)
                out.append({"entropy": entropy, "spawn_key": list(spawn_key), "pool_size": pool,
                            "state": [int(v) for v in ss.generate_state(4)]})
    return out


def ddim_a1111(eps_model, x, timesteps, alphas_cumprod, eta, callback):
    """A1111's DDIM (modules/sd_samplers_timesteps_impl.py), restated."""
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.numpy()) / (1 - alphas.numpy()) * (1 - alphas.numpy() / alphas_prev.numpy()))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps_model(x, int(timesteps[index]))
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
        noise = sigma_t * torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        callback(x.clone())
    return x


def make_ddim():
    inner = model_wrap(False)
    ac = inner.inner_model.alphas_cumprod

    def eps_model(x, t):
        a_t = float(ac[t])
        sigma = inner.sigmas[t]
        x_ve = x / math.sqrt(a_t)
        return (x_ve - gmm_denoiser(x_ve, sigma)) / sigma

    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.3
    t = {}
    steps = 10
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    t["ddim/timesteps"] = timesteps
    for eta in (0.0, 0.5):
        for mode in ("txt2img", "img2img"):
            torch.manual_seed(1234)
            if mode == "txt2img":
                x, ts = x_T, timesteps
            else:
                t_enc = int(min(STRENGTH, 0.999) * steps)
                ts = timesteps[:t_enc]
                a = ac[timesteps[t_enc]]
                x = init * torch.sqrt(a) + x_T * torch.sqrt(1 - a)
            traj = []
            with torch.no_grad():
                out = ddim_a1111(eps_model, x, ts, ac, eta, traj.append)
            key = f"ddim/eta{eta}/{mode}"
            t[key + "/out"] = out
            t[key + "/traj"] = torch.stack(traj)
            if eta == 0.0:
                traj = []
                with torch.no_grad():
                    out = plms_a1111(eps_model, x, ts, ac, traj.append)
                t[f"plms/{mode}/out"] = out
                t[f"plms/{mode}/traj"] = torch.stack(traj)
    return t


def make_unipc():
    from sampling_unipc_ref import VP, unipc

    inner = model_wrap(False)
    ac = inner.inner_model.alphas_cumprod
    ns = VP(ac)

    def x0_model(x, t):
        alpha, std = ns.alpha(t), ns.std(t)
        return gmm_denoiser(x / alpha, (std / alpha).reshape(1))

    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.3
    t = {}
    for steps in (10, 7):
        timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
        for mode in ("txt2img", "img2img"):
            if mode == "txt2img":
                x, n, t_start = x_T, len(timesteps), None
            else:
                t_enc = int(min(STRENGTH, 0.999) * steps)
                sched = timesteps[:t_enc]
                a = ac[timesteps[t_enc]]
                x = init * torch.sqrt(a) + x_T * torch.sqrt(1 - a)
                n, t_start = len(sched), sched[-1] / 1000 + 1 / 1000
            traj = []
            with torch.no_grad():
                out = unipc(x0_model, x, ac, n, t_start=t_start, order=3, callback=traj.append)
            key = f"unipc/{steps}/{mode}"
            t[key + "/out"] = out
            t[key + "/traj"] = torch.stack(traj)
    return t


def plms_a1111(eps_model, x, timesteps, alphas_cumprod, callback):
    """A1111's PLMS (modules/sd_samplers_timesteps_impl.py), restated."""
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def x_prev_and_pred(x, e_t, index):
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1. - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps_model(x, int(timesteps[index]))
        if len(old_eps) == 0:
            x_prev, _ = x_prev_and_pred(x, e_t, index)
            e_t_next = eps_model(x_prev, int(timesteps[max(index - 1, 0)]))
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x_prev, _ = x_prev_and_pred(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
        callback(x.clone())
    return x
