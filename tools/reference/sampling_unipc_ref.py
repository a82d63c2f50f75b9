"""UniPC as A1111 runs it (modules/models/diffusion/uni_pc/uni_pc.py with A1111's
defaults: variant bh1, predict_x0, multistep, time_uniform, order 3,
lower_order_final), restated in torch float32 for the Sumi fixtures.

The model is given as a data-prediction function x0(x, t) over the VP scale.
"""
import torch


class VP:
    def __init__(self, alphas_cumprod):
        self.log_alpha = 0.5 * torch.log(alphas_cumprod)
        self.N = len(alphas_cumprod)
        self.t_array = torch.linspace(0., 1., self.N + 1)[1:]

    def lmc(self, t):
        xs, ys, k = self.t_array, self.log_alpha, self.N
        j = int(torch.searchsorted(xs, t))
        j = min(max(j, 1), k - 1) - 1
        return ys[j] + (t - xs[j]) * (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])

    def alpha(self, t):
        return torch.exp(self.lmc(t))

    def std(self, t):
        return torch.sqrt(1. - torch.exp(2. * self.lmc(t)))

    def lam(self, t):
        l = self.lmc(t)
        return l - 0.5 * torch.log(1. - torch.exp(2. * l))


def bh_update(ns, model_fn, x, model_prev, t_prev, t, order, use_corrector):
    t_prev_0, model_prev_0 = t_prev[-1], model_prev[-1]
    lambda_prev_0, lambda_t = ns.lam(t_prev_0), ns.lam(t)
    sigma_prev_0, sigma_t = ns.std(t_prev_0), ns.std(t)
    alpha_t = ns.alpha(t)
    h = lambda_t - lambda_prev_0
    rks, D1s = [], []
    for i in range(1, order):
        rk = (ns.lam(t_prev[-(i + 1)]) - lambda_prev_0) / h
        rks.append(rk)
        D1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
    rks.append(torch.tensor(1.))
    rks = torch.stack(rks)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = hh
    R, b = [], []
    for i in range(1, order + 1):
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= (i + 1)
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    R, b = torch.stack(R), torch.stack(b)
    x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
    x_t = x_t_
    if D1s:
        D1s = torch.stack(D1s, dim=1)
        rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        x_t = x_t_ - alpha_t * B_h * torch.einsum('k,bkchw->bchw', rhos_p, D1s)
    else:
        D1s = None
    model_t = None
    if use_corrector:
        rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)
        model_t = model_fn(x_t, t)
        corr_res = torch.einsum('k,bkchw->bchw', rhos_c[:-1], D1s) if D1s is not None else 0
        x_t = x_t_ - alpha_t * B_h * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
    return x_t, model_t


def unipc(model_fn, x, alphas_cumprod, steps, t_start=None, order=3, callback=None):
    ns = VP(alphas_cumprod)
    t_0, t_T = 1. / ns.N, (1. if t_start is None else float(t_start))
    timesteps = torch.linspace(t_T, t_0, steps + 1)
    model_prev, t_prev = [model_fn(x, timesteps[0])], [timesteps[0]]
    for init_order in range(1, order):
        t = timesteps[init_order]
        x, model_x = bh_update(ns, model_fn, x, model_prev, t_prev, t, init_order, True)
        callback(x.clone())
        model_prev.append(model_x)
        t_prev.append(t)
    for step in range(order, steps + 1):
        t = timesteps[step]
        step_order = min(order, steps + 1 - step)
        x, model_x = bh_update(ns, model_fn, x, model_prev, t_prev, t, step_order, step != steps)
        callback(x.clone())
        for i in range(order - 1):
            t_prev[i], model_prev[i] = t_prev[i + 1], model_prev[i + 1]
        t_prev[-1] = t
        if step < steps:
            model_prev[-1] = model_x
    return x
