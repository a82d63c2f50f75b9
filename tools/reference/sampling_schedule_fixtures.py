"""Schedule fixtures: A1111's schedule types over k-diffusion's CompVisDenoiser
for the SD scaled-linear training schedule, float32 as A1111 computes them.

The A1111 scheduler bodies (modules/sd_schedulers.py) are restated here from their
semantics; karras / exponential / polyexponential / uniform / sigma_to_t /
t_to_sigma are k-diffusion's own functions.
"""
import numpy as np
import torch
from scipy import stats
from k_diffusion import external, sampling as K


class FakeLDM:
    """Just enough of an LDM for CompVisDenoiser: the float32 alphas_cumprod."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = np.cumprod(1.0 - betas.numpy(), axis=0)
        self.alphas_cumprod = torch.tensor(alphas_cumprod, dtype=torch.float32)


def model_wrap(v=False):
    cls = external.CompVisVDenoiser if v else external.CompVisDenoiser
    return cls(FakeLDM())


def sgm_uniform(n, smin, smax, inner):
    start, end = inner.sigma_to_t(torch.tensor(smax)), inner.sigma_to_t(torch.tensor(smin))
    sigs = [inner.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigs + [0.0])


def normal(n, smin, smax, inner):
    start, end = inner.sigma_to_t(torch.tensor(smax)), inner.sigma_to_t(torch.tensor(smin))
    sigs = [inner.t_to_sigma(ts) for ts in torch.linspace(start, end, n)]
    return torch.FloatTensor(sigs + [0.0])


AYS = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def ays(n, table):
    sig = list(AYS[table])
    if n != len(sig):
        xs = np.linspace(0, 1, len(sig))
        ys = np.log(sig[::-1])
        out = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
        sig = np.append(out, [0.0])
    else:
        sig.append(0.0)
    return torch.FloatTensor(sig)


def kl_optimal(n, smin, smax):
    a_min, a_max = torch.arctan(torch.tensor(smin)), torch.arctan(torch.tensor(smax))
    i = torch.arange(n + 1)
    return torch.tan(i / n * a_min + (1.0 - i / n) * a_max)


def simple(n, inner):
    ss = len(inner.sigmas) / n
    return torch.FloatTensor([float(inner.sigmas[-(1 + int(x * ss))]) for x in range(n)] + [0.0])


def ddim(n, inner):
    ss = max(len(inner.sigmas) // n, 1)
    sigs, x = [], 1
    while x < len(inner.sigmas):
        sigs.append(float(inner.sigmas[x]))
        x += ss
    return torch.FloatTensor(sigs[::-1] + [0.0])


def beta(n, smin, smax, a=0.6, b=0.6):
    ts = [stats.beta.ppf(x, a, b) for x in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([smin + x * (smax - smin) for x in ts] + [0.0])


def schedules_for(n, inner):
    smin, smax = inner.sigmas[0].item(), inner.sigmas[-1].item()
    return {
        "uniform": inner.get_sigmas(n),
        "karras": K.get_sigmas_karras(n, smin, smax, rho=7.0),
        "exponential": K.get_sigmas_exponential(n, smin, smax),
        "polyexponential": K.get_sigmas_polyexponential(n, smin, smax, rho=1.0),
        "sgm_uniform": sgm_uniform(n, smin, smax, inner),
        "kl_optimal": kl_optimal(n, smin, smax),
        "align_your_steps": ays(n, "sd15"),
        "align_your_steps_sdxl": ays(n, "sdxl"),
        "simple": simple(n, inner),
        "normal": normal(n, smin, smax, inner),
        "ddim": ddim(n, inner),
        "beta": beta(n, smin, smax),
    }


STEPS = [1, 3, 7, 10, 11, 20, 35]


def make():
    out = {}
    for kind, v in (("eps", False), ("v", True)):
        inner = model_wrap(v)
        out[kind] = {
            "discrete_sigmas": inner.sigmas.tolist(),
            "sigma_to_t": [[s, float(inner.sigma_to_t(torch.tensor(s)))] for s in (0.0292, 0.03, 0.5, 1.0, 3.3, 14.6, 20.0, 0.01)],
            "t_to_sigma": [[t, float(inner.t_to_sigma(torch.tensor(t)))] for t in (0.0, 0.5, 10.25, 500.0, 998.75, 999.0)],
            "schedules": {str(n): {k: s.tolist() for k, s in schedules_for(n, inner).items()} for n in STEPS},
        }
    return out
