"""A1111-style noise fixtures: ImageRNG (seeds, variation seeds, seed resize, ENSD)
and full DPM++ SDE Karras / Euler a runs with A1111's noise plumbing, for the
"CPU" and "NV" sources.

A1111's modules/rng.py, modules/sd_samplers_common.py (torchsde _randn
replacement) and sd_samplers_kdiffusion.py (create_noise_sampler) are restated
here from their semantics; k-diffusion and torchsde are used as installed.
"""
import warnings

import torch
import torchsde._brownian.brownian_interval as torchsde_bi
from k_diffusion import external, sampling as K

from sampling_philox_ref import Philox
from sampling_sampler_fixtures import gmm_denoiser
from sampling_schedule_fixtures import model_wrap

warnings.filterwarnings("ignore", module="torchsde")


class Gen:
    """A1111 create_generator(seed) for a source."""

    def __init__(self, source, seed):
        self.source = source
        self.g = Philox(seed) if source == "NV" else torch.Generator().manual_seed(int(seed))

    def randn(self, shape):
        if self.source == "NV":
            n = 1
            for d in shape:
                n *= d
            return torch.from_numpy(self.g.randn(n).reshape(shape))
        return torch.randn(shape, generator=self.g)


def randn_local(source, seed, shape):
    return Gen(source, seed).randn(shape)


def slerp(val, low, high):
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    def __init__(self, source, shape, seeds, subseeds=None, subseed_strength=0.0, resize_h=0, resize_w=0, ensd=0):
        self.source, self.shape, self.seeds = source, shape, seeds
        self.subseeds, self.subseed_strength = subseeds, subseed_strength
        self.resize_h, self.resize_w, self.ensd = resize_h, resize_w, ensd
        self.generators = [Gen(source, s) for s in seeds]
        self.is_first = True

    def first(self):
        shape = self.shape
        noise_shape = shape if self.resize_h <= 0 or self.resize_w <= 0 else (shape[0], self.resize_h // 8, self.resize_w // 8)
        xs = []
        for i, (seed, gen) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn_local(self.source, subseed, noise_shape)
            noise = randn_local(self.source, seed, noise_shape) if noise_shape != shape else gen.randn(shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != shape:
                x = gen.randn(shape)
                dx = (shape[2] - noise_shape[2]) // 2
                dy = (shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(dx, 0), max(dy, 0)
                dx, dy = max(-dx, 0), max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x
            xs.append(noise)
        if self.ensd:
            self.generators = [Gen(self.source, s + self.ensd) for s in self.seeds]
        return torch.stack(xs)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([g.randn(self.shape) for g in self.generators])


SHAPE = (4, 8, 8)
SEEDS = [100, 101]
RNG_CASES = {
    "plain": {},
    "ensd": {"ensd": 31337},
    "variation": {"subseeds": [5, 6], "subseed_strength": 0.3},
    "variation_one_subseed": {"subseeds": [5], "subseed_strength": 0.8},
    "resize_smaller": {"resize_h": 48, "resize_w": 80},
    "resize_larger": {"resize_h": 96, "resize_w": 32},
    "resize_variation": {"resize_h": 40, "resize_w": 40, "subseeds": [9, 10], "subseed_strength": 0.5},
}


def dpmpp_sde_run(source, img2img):
    """A1111 txt2img/img2img with DPM++ SDE Karras, 10 steps, batch seeds 100/101."""
    torchsde_bi._randn = lambda size, dtype, device, seed: randn_local(source, seed, size).to(dtype)
    inner = model_wrap(False)
    steps = 10
    sigmas = K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
    rng = ImageRNG(source, SHAPE, SEEDS)
    noise = rng.next()
    if img2img:
        init = randn_local("CPU", 7, (2, *SHAPE)) * 0.8 + 0.3
        t_enc = int(min(0.6, 0.999) * steps)
        run_sigmas = sigmas[steps - t_enc - 1:]
        x = init + noise * run_sigmas[0]
    else:
        run_sigmas = sigmas
        x = noise * sigmas[0]
    ns = K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=SEEDS)
    traj = []
    with torch.no_grad():
        out = K.sample_dpmpp_sde(gmm_denoiser, x, run_sigmas, noise_sampler=ns, disable=True,
                                 callback=lambda d: traj.append(d["x"].clone()))
    torchsde_bi._randn = _orig_randn
    return out, torch.stack(traj), sigmas


def euler_a_run(source, ensd):
    """A1111 txt2img with Euler a (sampler noise from ImageRNG.next(), ENSD honoured)."""
    inner = model_wrap(False)
    sigmas = inner.get_sigmas(6)
    rng = ImageRNG(source, SHAPE, SEEDS, ensd=ensd)
    x = rng.next() * sigmas[0]
    traj = []
    with torch.no_grad():
        out = K.sample_euler_ancestral(gmm_denoiser, x, sigmas, noise_sampler=lambda s, sn: rng.next(), disable=True,
                                       callback=lambda d: traj.append(d["x"].clone()))
    return out, torch.stack(traj)


_orig_randn = torchsde_bi._randn


def make():
    t = {}
    for source in ("CPU", "NV"):
        for name, kw in RNG_CASES.items():
            rng = ImageRNG(source, SHAPE, SEEDS, **kw)
            t[f"rng/{source}/{name}/first"] = rng.next()
            t[f"rng/{source}/{name}/next1"] = rng.next()
            t[f"rng/{source}/{name}/next2"] = rng.next()
        for img2img in (False, True):
            out, traj, sigmas = dpmpp_sde_run(source, img2img)
            mode = "img2img" if img2img else "txt2img"
            t[f"dpmpp_sde_karras/{source}/{mode}/out"] = out
            t[f"dpmpp_sde_karras/{source}/{mode}/traj"] = traj
            t["dpmpp_sde_karras/sigmas"] = sigmas
        for ensd in (0, 31337):
            out, traj = euler_a_run(source, ensd)
            t[f"euler_a/{source}/ensd{ensd}/out"] = out
            t[f"euler_a/{source}/ensd{ensd}/traj"] = traj
    t.update(make_lcm())
    t.update(make_sde_defaults())
    return {k: v.contiguous().float() for k, v in t.items()}


class LCMDenoiserRef(external.DiscreteEpsDDPMDenoiser):
    """A1111's LCMCompVisDenoiser (modules/sd_samplers_lcm.py), restated over k-diffusion."""

    def __init__(self, model):
        timesteps, original_timesteps = 1000, 50
        self.skip_steps = timesteps // original_timesteps
        valid = torch.zeros(original_timesteps, dtype=torch.float32)
        for x in range(original_timesteps):
            valid[original_timesteps - 1 - x] = model.alphas_cumprod[timesteps - 1 - x * self.skip_steps]
        super().__init__(model, valid, quantize=None)

    def get_sigmas(self, n=None):
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return K.append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

    def sigma_to_t(self, sigma, quantize=None):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        t = torch.clamp(((timestep - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=(len(self.sigmas) - 1))
        return super().t_to_sigma(t)

    def get_eps(self, x, t):
        return 0.5 * torch.tanh(x) + 0.001 * t.float().reshape(-1, 1, 1, 1)

    def forward(self, input, sigma):
        c_out, c_in = [x.reshape(-1, 1, 1, 1) for x in self.get_scalings(sigma)]
        eps = self.get_eps(input * c_in, self.sigma_to_t(sigma))
        output = input + eps * c_out
        st = (self.sigma_to_t(sigma) * 10.0).reshape(-1, 1, 1, 1)
        c_skip = 0.5 ** 2 / (st ** 2 + 0.5 ** 2)
        c_out2 = st / (st ** 2 + 0.5 ** 2) ** 0.5
        return c_out2 * output + c_skip * input


def make_lcm():
    from sampling_schedule_fixtures import FakeLDM
    den = LCMDenoiserRef(FakeLDM())
    t = {"lcm/table": den.sigmas}
    x_T = torch.randn((1, 2, 4, 4), generator=torch.Generator().manual_seed(42))
    for n in (4, 6):
        sig = den.get_sigmas(n)
        t[f"lcm/sigmas{n}"] = sig
    sig = t["lcm/sigmas4"]
    x = x_T * sig[0]
    t["lcm/denoise"] = torch.stack([den(x, s.reshape(1)) for s in sig[:-1]])
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        t["lcm/out"] = _lcm(den, x, sig, g)
    return t


def _lcm(model, x, sigmas, g):
    """A1111's sample_lcm with torch.randn noise from generator g."""
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i].reshape(1))
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * torch.randn(x.shape, generator=g)
    return x


def sde_run(source, sampler, scheduler, steps, discard_penultimate=False):
    """A1111 txt2img with a Brownian-noise sampler and its default schedule."""
    torchsde_bi._randn = lambda size, dtype, device, seed: randn_local(source, seed, size).to(dtype)
    inner = model_wrap(False)
    smin, smax = inner.sigmas[0].item(), inner.sigmas[-1].item()
    n = steps + (1 if discard_penultimate else 0)
    sigmas = K.get_sigmas_exponential(n, smin, smax) if scheduler == "exponential" else K.get_sigmas_karras(n, smin, smax)
    if discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    rng = ImageRNG(source, SHAPE, SEEDS)
    x = rng.next() * sigmas[0]
    ns = K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=SEEDS)
    fn = {"dpmpp_2m_sde": K.sample_dpmpp_2m_sde, "dpmpp_3m_sde": K.sample_dpmpp_3m_sde}[sampler]
    with torch.no_grad():
        out = fn(gmm_denoiser, x, sigmas, noise_sampler=ns, disable=True)
    torchsde_bi._randn = _orig_randn
    return out


def make_sde_defaults():
    t = {}
    for source in ("CPU", "NV"):
        t[f"dpmpp_2m_sde_exponential/{source}/out"] = sde_run(source, "dpmpp_2m_sde", "exponential", 20)
        t[f"dpmpp_3m_sde_exponential/{source}/out"] = sde_run(source, "dpmpp_3m_sde", "exponential", 20, True)
    return t
