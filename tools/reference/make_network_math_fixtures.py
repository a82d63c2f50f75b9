#!/usr/bin/env python3
"""The math of A1111 v1.10.1's extra-network modules (extensions-builtin/Lora: network.py,
network_lora.py, network_hada.py, network_lokr.py, network_ia3.py, network_full.py,
network_norm.py, network_glora.py, network_oft.py, lyco_helpers.py and networks.py's
network_apply_weights), restated here with A1111's formulas copied verbatim (nothing imported
from A1111: `shared`, `devices` and sd3's QkvLinear are the only things removed), run on random
tensors with a fixed seed, for crates/sumi-models/tests/networks_math.rs.

Each case: one layer (linear, conv 1x1, conv 3x3, norm, inpainting conv_in with 9 input
channels), its weight and bias, and one or more networks (their parts, multiplier, dyn_dim)
folded over it in order. Recorded: the inputs, every network's calc_updown output (updown,
ex_bias) on the weight it saw, and the merged weight/bias.

Usage: make_network_math_fixtures.py OUT_DIR   (writes cases.safetensors and cases.json)
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import save_file

# ---------------------------------------------------------------- lyco_helpers.py (verbatim)


def make_weight_cp(t, wa, wb):
    temp = torch.einsum('i j k l, j r -> i r k l', t, wb)
    return torch.einsum('i j k l, i r -> r j k l', temp, wa)


def rebuild_conventional(up, down, shape, dyn_dim=None):
    up = up.reshape(up.size(0), -1)
    down = down.reshape(down.size(0), -1)
    if dyn_dim is not None:
        up = up[:, :dyn_dim]
        down = down[:dyn_dim, :]
    return (up @ down).reshape(shape)


def rebuild_cp_decomposition(up, down, mid):
    up = up.reshape(up.size(0), -1)
    down = down.reshape(down.size(0), -1)
    return torch.einsum('n m k l, i n, m j -> i j k l', mid, up, down)


# ------------------------------------------------------------------------- network.py


class Network:  # only the fields the math reads
    def __init__(self, te_multiplier=1.0, unet_multiplier=1.0, dyn_dim=None):
        self.te_multiplier = te_multiplier
        self.unet_multiplier = unet_multiplier
        self.dyn_dim = dyn_dim


class NetworkWeights:
    def __init__(self, sd_key, w, sd_module):
        self.network_key = sd_key
        self.sd_key = sd_key
        self.w = w
        self.sd_module = sd_module


class NetworkModule:
    def __init__(self, net, weights):
        self.network = net
        self.network_key = weights.network_key
        self.sd_key = weights.sd_key
        self.sd_module = weights.sd_module
        if hasattr(self.sd_module, 'weight'):
            self.shape = self.sd_module.weight.shape
        else:
            self.shape = None
        self.dim = None
        self.bias = weights.w.get("bias")
        self.alpha = weights.w["alpha"].item() if "alpha" in weights.w else None
        self.scale = weights.w["scale"].item() if "scale" in weights.w else None
        self.dora_scale = weights.w.get("dora_scale", None)
        self.dora_norm_dims = len(self.shape) - 1

    def multiplier(self):
        if 'transformer' in self.sd_key[:20]:
            return self.network.te_multiplier
        else:
            return self.network.unet_multiplier

    def calc_scale(self):
        if self.scale is not None:
            return self.scale
        if self.dim is not None and self.alpha is not None:
            return self.alpha / self.dim
        return 1.0

    def apply_weight_decompose(self, updown, orig_weight):
        orig_weight = orig_weight.to(updown.dtype)
        dora_scale = self.dora_scale.to(device=orig_weight.device, dtype=updown.dtype)
        updown = updown.to(orig_weight.device)
        merged_scale1 = updown + orig_weight
        merged_scale1_norm = (
            merged_scale1.transpose(0, 1)
            .reshape(merged_scale1.shape[1], -1)
            .norm(dim=1, keepdim=True)
            .reshape(merged_scale1.shape[1], *[1] * self.dora_norm_dims)
            .transpose(0, 1)
        )
        dora_merged = (
            merged_scale1 * (dora_scale / merged_scale1_norm)
        )
        final_updown = dora_merged - orig_weight
        return final_updown

    def finalize_updown(self, updown, orig_weight, output_shape, ex_bias=None):
        if self.bias is not None:
            updown = updown.reshape(self.bias.shape)
            updown += self.bias.to(orig_weight.device, dtype=updown.dtype)
            updown = updown.reshape(output_shape)
        if len(output_shape) == 4:
            updown = updown.reshape(output_shape)
        if orig_weight.size().numel() == updown.size().numel():
            updown = updown.reshape(orig_weight.shape)
        if ex_bias is not None:
            ex_bias = ex_bias * self.multiplier()
        updown = updown * self.calc_scale()
        if self.dora_scale is not None:
            updown = self.apply_weight_decompose(updown, orig_weight)
        return updown * self.multiplier(), ex_bias


# -------------------------------------------------------------------- network_lora.py


class ModuleTypeLora:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["lora_up.weight", "lora_down.weight"]):
            return NetworkModuleLora(net, weights)
        if all(x in weights.w for x in ["lora_A.weight", "lora_B.weight"]):
            w = weights.w.copy()
            weights.w.clear()
            weights.w.update({"lora_up.weight": w["lora_B.weight"], "lora_down.weight": w["lora_A.weight"]})
            return NetworkModuleLora(net, weights)
        return None


class NetworkModuleLora(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.up_model = self.create_module(weights.w, "lora_up.weight")
        self.down_model = self.create_module(weights.w, "lora_down.weight")
        self.mid_model = self.create_module(weights.w, "lora_mid.weight", none_ok=True)
        self.dim = weights.w["lora_down.weight"].shape[0]

    def create_module(self, weights, key, none_ok=False):
        weight = weights.get(key)
        if weight is None and none_ok:
            return None
        is_linear = type(self.sd_module) in [torch.nn.Linear, torch.nn.modules.linear.NonDynamicallyQuantizableLinear, torch.nn.MultiheadAttention]
        is_conv = type(self.sd_module) in [torch.nn.Conv2d]
        if is_linear:
            weight = weight.reshape(weight.shape[0], -1)
            module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        elif is_conv and key == "lora_down.weight" or key == "dyn_up":
            if len(weight.shape) == 2:
                weight = weight.reshape(weight.shape[0], -1, 1, 1)
            if weight.shape[2] != 1 or weight.shape[3] != 1:
                module = torch.nn.Conv2d(weight.shape[1], weight.shape[0], self.sd_module.kernel_size, self.sd_module.stride, self.sd_module.padding, bias=False)
            else:
                module = torch.nn.Conv2d(weight.shape[1], weight.shape[0], (1, 1), bias=False)
        elif is_conv and key == "lora_mid.weight":
            module = torch.nn.Conv2d(weight.shape[1], weight.shape[0], self.sd_module.kernel_size, self.sd_module.stride, self.sd_module.padding, bias=False)
        elif is_conv and key == "lora_up.weight" or key == "dyn_down":
            module = torch.nn.Conv2d(weight.shape[1], weight.shape[0], (1, 1), bias=False)
        else:
            raise AssertionError(f'Lora layer {self.network_key} matched a layer with unsupported type: {type(self.sd_module).__name__}')
        with torch.no_grad():
            if weight.shape != module.weight.shape:
                weight = weight.reshape(module.weight.shape)
            module.weight.copy_(weight)
        module.to(device="cpu", dtype=torch.float32)
        module.weight.requires_grad_(False)
        return module

    def calc_updown(self, orig_weight):
        up = self.up_model.weight.to(orig_weight.device)
        down = self.down_model.weight.to(orig_weight.device)
        output_shape = [up.size(0), down.size(1)]
        if self.mid_model is not None:
            mid = self.mid_model.weight.to(orig_weight.device)
            updown = rebuild_cp_decomposition(up, down, mid)
            output_shape += mid.shape[2:]
        else:
            if len(down.shape) == 4:
                output_shape += down.shape[2:]
            updown = rebuild_conventional(up, down, output_shape, self.network.dyn_dim)
        return self.finalize_updown(updown, orig_weight, output_shape)


# -------------------------------------------------------------------- network_hada.py


class ModuleTypeHada:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]):
            return NetworkModuleHada(net, weights)
        return None


class NetworkModuleHada(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        if hasattr(self.sd_module, 'weight'):
            self.shape = self.sd_module.weight.shape
        self.w1a = weights.w["hada_w1_a"]
        self.w1b = weights.w["hada_w1_b"]
        self.dim = self.w1b.shape[0]
        self.w2a = weights.w["hada_w2_a"]
        self.w2b = weights.w["hada_w2_b"]
        self.t1 = weights.w.get("hada_t1")
        self.t2 = weights.w.get("hada_t2")

    def calc_updown(self, orig_weight):
        w1a, w1b, w2a, w2b = self.w1a, self.w1b, self.w2a, self.w2b
        output_shape = [w1a.size(0), w1b.size(1)]
        if self.t1 is not None:
            output_shape = [w1a.size(1), w1b.size(1)]
            t1 = self.t1
            updown1 = make_weight_cp(t1, w1a, w1b)
            output_shape += t1.shape[2:]
        else:
            if len(w1b.shape) == 4:
                output_shape += w1b.shape[2:]
            updown1 = rebuild_conventional(w1a, w1b, output_shape)
        if self.t2 is not None:
            t2 = self.t2
            updown2 = make_weight_cp(t2, w2a, w2b)
        else:
            updown2 = rebuild_conventional(w2a, w2b, output_shape)
        updown = updown1 * updown2
        return self.finalize_updown(updown, orig_weight, output_shape)


# -------------------------------------------------------------------- network_lokr.py


class ModuleTypeLokr:
    def create_module(self, net, weights):
        has_1 = "lokr_w1" in weights.w or ("lokr_w1_a" in weights.w and "lokr_w1_b" in weights.w)
        has_2 = "lokr_w2" in weights.w or ("lokr_w2_a" in weights.w and "lokr_w2_b" in weights.w)
        if has_1 and has_2:
            return NetworkModuleLokr(net, weights)
        return None


def make_kron(orig_shape, w1, w2):
    if len(w2.shape) == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    w2 = w2.contiguous()
    return torch.kron(w1, w2).reshape(orig_shape)


class NetworkModuleLokr(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.w1 = weights.w.get("lokr_w1")
        self.w1a = weights.w.get("lokr_w1_a")
        self.w1b = weights.w.get("lokr_w1_b")
        self.dim = self.w1b.shape[0] if self.w1b is not None else self.dim
        self.w2 = weights.w.get("lokr_w2")
        self.w2a = weights.w.get("lokr_w2_a")
        self.w2b = weights.w.get("lokr_w2_b")
        self.dim = self.w2b.shape[0] if self.w2b is not None else self.dim
        self.t2 = weights.w.get("lokr_t2")

    def calc_updown(self, orig_weight):
        if self.w1 is not None:
            w1 = self.w1
        else:
            w1 = self.w1a @ self.w1b
        if self.w2 is not None:
            w2 = self.w2
        elif self.t2 is None:
            w2 = self.w2a @ self.w2b
        else:
            w2 = make_weight_cp(self.t2, self.w2a, self.w2b)
        output_shape = [w1.size(0) * w2.size(0), w1.size(1) * w2.size(1)]
        if len(orig_weight.shape) == 4:
            output_shape = orig_weight.shape
        updown = make_kron(output_shape, w1, w2)
        return self.finalize_updown(updown, orig_weight, output_shape)


# --------------------------------------------------------------------- network_ia3.py


class ModuleTypeIa3:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["weight"]):
            return NetworkModuleIa3(net, weights)
        return None


class NetworkModuleIa3(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.w = weights.w["weight"]
        self.on_input = weights.w["on_input"].item()

    def calc_updown(self, orig_weight):
        w = self.w
        output_shape = [w.size(0), orig_weight.size(1)]
        if self.on_input:
            output_shape.reverse()
        else:
            w = w.reshape(-1, 1)
        updown = orig_weight * w
        return self.finalize_updown(updown, orig_weight, output_shape)


# ------------------------------------------------------------ network_full.py, network_norm.py


class ModuleTypeFull:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["diff"]):
            return NetworkModuleFull(net, weights)
        return None


class NetworkModuleFull(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.weight = weights.w.get("diff")
        self.ex_bias = weights.w.get("diff_b")

    def calc_updown(self, orig_weight):
        output_shape = self.weight.shape
        updown = self.weight
        ex_bias = self.ex_bias if self.ex_bias is not None else None
        return self.finalize_updown(updown, orig_weight, output_shape, ex_bias)


class ModuleTypeNorm:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["w_norm", "b_norm"]):
            return NetworkModuleNorm(net, weights)
        return None


class NetworkModuleNorm(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.w_norm = weights.w.get("w_norm")
        self.b_norm = weights.w.get("b_norm")

    def calc_updown(self, orig_weight):
        output_shape = self.w_norm.shape
        updown = self.w_norm
        ex_bias = self.b_norm if self.b_norm is not None else None
        return self.finalize_updown(updown, orig_weight, output_shape, ex_bias)


# ------------------------------------------------------------------- network_glora.py


class ModuleTypeGLora:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"]):
            return NetworkModuleGLora(net, weights)
        return None


class NetworkModuleGLora(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        if hasattr(self.sd_module, 'weight'):
            self.shape = self.sd_module.weight.shape
        self.w1a = weights.w["a1.weight"]
        self.w1b = weights.w["b1.weight"]
        self.w2a = weights.w["a2.weight"]
        self.w2b = weights.w["b2.weight"]

    def calc_updown(self, orig_weight):
        w1a, w1b, w2a, w2b = self.w1a, self.w1b, self.w2a, self.w2b
        output_shape = [w1a.size(0), w1b.size(1)]
        updown = ((w2b @ w1b) + ((orig_weight.to(dtype=w1a.dtype) @ w2a) @ w1a))
        return self.finalize_updown(updown, orig_weight, output_shape)


# --------------------------------------------------------------------- network_oft.py


class ModuleTypeOFT:
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["oft_blocks"]) or all(x in weights.w for x in ["oft_diag"]):
            return NetworkModuleOFT(net, weights)
        return None


class NetworkModuleOFT(NetworkModule):
    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.lin_module = None
        self.org_module = [self.sd_module]
        self.scale = 1.0
        self.is_R = False
        self.is_boft = False
        if "oft_blocks" in weights.w.keys():
            self.oft_blocks = weights.w["oft_blocks"]
            self.alpha = weights.w.get("alpha", None)
            self.dim = self.oft_blocks.shape[0]
        elif "oft_diag" in weights.w.keys():
            self.is_R = True
            self.oft_blocks = weights.w["oft_diag"]
            self.dim = self.oft_blocks.shape[1]
        is_linear = type(self.sd_module) in [torch.nn.Linear, torch.nn.modules.linear.NonDynamicallyQuantizableLinear]
        is_conv = type(self.sd_module) in [torch.nn.Conv2d]
        is_other_linear = type(self.sd_module) in [torch.nn.MultiheadAttention]
        if is_linear:
            self.out_dim = self.sd_module.out_features
        elif is_conv:
            self.out_dim = self.sd_module.out_channels
        elif is_other_linear:
            self.out_dim = self.sd_module.embed_dim
        if self.oft_blocks.dim() == 4:
            self.is_boft = True
        self.rescale = weights.w.get('rescale', None)
        if self.rescale is not None and not is_other_linear:
            self.rescale = self.rescale.reshape(-1, *[1] * (self.org_module[0].weight.dim() - 1))
        self.num_blocks = self.dim
        self.block_size = self.out_dim // self.dim
        self.constraint = (0 if self.alpha is None else self.alpha) * self.out_dim
        if self.is_R:
            self.constraint = None
            self.block_size = self.dim
            self.num_blocks = self.out_dim // self.dim
        elif self.is_boft:
            self.boft_m = self.oft_blocks.shape[0]
            self.num_blocks = self.oft_blocks.shape[1]
            self.block_size = self.oft_blocks.shape[2]
            self.boft_b = self.block_size

    def calc_updown(self, orig_weight):
        oft_blocks = self.oft_blocks
        eye = torch.eye(self.block_size, device=oft_blocks.device)
        if not self.is_R:
            block_Q = oft_blocks - oft_blocks.transpose(-1, -2)
            if self.constraint != 0:
                norm_Q = torch.norm(block_Q.flatten())
                new_norm_Q = torch.clamp(norm_Q, max=self.constraint.to(oft_blocks.device))
                block_Q = block_Q * ((new_norm_Q + 1e-8) / (norm_Q + 1e-8))
            oft_blocks = torch.matmul(eye + block_Q, (eye - block_Q).float().inverse())
        R = oft_blocks
        if not self.is_boft:
            merged_weight = rearrange(orig_weight, '(k n) ... -> k n ...', k=self.num_blocks, n=self.block_size)
            merged_weight = torch.einsum('k n m, k n ... -> k m ...', R, merged_weight)
            merged_weight = rearrange(merged_weight, 'k m ... -> (k m) ...')
        else:
            scale = 1.0
            m = self.boft_m
            b = self.boft_b
            r_b = b // 2
            inp = orig_weight
            for i in range(m):
                bi = R[i]
                if i == 0:
                    bi = bi * scale + (1 - scale) * eye
                inp = rearrange(inp, "(c g k) ... -> (c k g) ...", g=2, k=2**i * r_b)
                inp = rearrange(inp, "(d b) ... -> d b ...", b=b)
                inp = torch.einsum("b i j, b j ... -> b i ...", bi, inp)
                inp = rearrange(inp, "d b ... -> (d b) ...")
                inp = rearrange(inp, "(c k g) ... -> (c g k) ...", g=2, k=2**i * r_b)
            merged_weight = inp
        if self.rescale is not None:
            merged_weight = self.rescale.to(merged_weight) * merged_weight
        updown = merged_weight.to(orig_weight.device) - orig_weight.to(merged_weight.dtype)
        output_shape = orig_weight.shape
        return self.finalize_updown(updown, orig_weight, output_shape)


# ------------------------------------------------------------------------- networks.py

module_types = [ModuleTypeLora(), ModuleTypeHada(), ModuleTypeIa3(), ModuleTypeLokr(),
                ModuleTypeFull(), ModuleTypeNorm(), ModuleTypeGLora(), ModuleTypeOFT()]


def create_module(net, weights):
    for nettype in module_types:
        m = nettype.create_module(net, weights)
        if m is not None:
            return m
    raise AssertionError("no module type accepts " + ", ".join(weights.w))


def apply_weights(layer, modules):
    """The body of network_apply_weights for one layer (weights already restored from backup):
    each network in order sees the weight after the previous merges."""
    steps = []
    for module in modules:
        with torch.no_grad():
            weight = layer.weight
            bias = layer.bias
            updown, ex_bias = module.calc_updown(weight)
            steps.append((updown.clone(), None if ex_bias is None else ex_bias.clone()))
            if len(weight.shape) == 4 and weight.shape[1] == 9:
                # inpainting model. zero pad updown to make channel[1]  4 to 9
                updown = torch.nn.functional.pad(updown, (0, 0, 0, 0, 0, 5))
            layer.weight.copy_((weight.to(dtype=updown.dtype) + updown).to(dtype=layer.weight.dtype))
            if ex_bias is not None and hasattr(layer, 'bias'):
                if layer.bias is None:
                    layer.bias = torch.nn.Parameter(ex_bias).to(layer.weight.dtype)
                else:
                    layer.bias.copy_((bias + ex_bias).to(dtype=layer.bias.dtype))
    return steps


# ----------------------------------------------------------------------------- cases

OUT, IN = 8, 6


def make_layer(kind, bias=True):
    if kind == "linear":
        return nn.Linear(IN, OUT, bias=bias)
    if kind == "conv1x1":
        return nn.Conv2d(IN, OUT, 1, bias=bias)
    if kind == "conv3x3":
        return nn.Conv2d(IN, OUT, 3, padding=1, bias=bias)
    if kind == "inpaint":
        return nn.Conv2d(9, OUT, 3, padding=1, bias=bias)
    if kind == "norm":
        return nn.GroupNorm(2, OUT, affine=True)
    if kind == "layernorm":
        return nn.LayerNorm(OUT)
    raise ValueError(kind)


def r(*shape, std=0.5):
    return (torch.randn(*shape) * std).float()


def s(v):
    return torch.tensor(float(v))


def lora_parts(kind, rank=4, alpha=None, conv_kernel=False, tucker=False, in_ch=IN):
    if kind == "linear":
        p = {"lora_down.weight": r(rank, in_ch), "lora_up.weight": r(OUT, rank)}
    elif tucker:
        p = {"lora_down.weight": r(rank, in_ch, 1, 1), "lora_mid.weight": r(rank, rank, 3, 3),
             "lora_up.weight": r(OUT, rank, 1, 1)}
    elif conv_kernel:
        p = {"lora_down.weight": r(rank, in_ch, 3, 3), "lora_up.weight": r(OUT, rank, 1, 1)}
    else:
        p = {"lora_down.weight": r(rank, in_ch, 1, 1), "lora_up.weight": r(OUT, rank, 1, 1)}
    if alpha is not None:
        p["alpha"] = s(alpha)
    return p


def hada_parts(kind, rank=3, tucker=False):
    k = 3 if kind == "conv3x3" else 1
    if tucker:
        return {"hada_w1_a": r(rank, OUT), "hada_w1_b": r(rank, IN), "hada_t1": r(rank, rank, k, k),
                "hada_w2_a": r(rank, OUT), "hada_w2_b": r(rank, IN), "hada_t2": r(rank, rank, k, k),
                "alpha": s(2.0)}
    if kind == "linear":
        return {"hada_w1_a": r(OUT, rank), "hada_w1_b": r(rank, IN),
                "hada_w2_a": r(OUT, rank), "hada_w2_b": r(rank, IN), "alpha": s(1.5)}
    return {"hada_w1_a": r(OUT, rank), "hada_w1_b": r(rank, IN * k * k),
            "hada_w2_a": r(OUT, rank), "hada_w2_b": r(rank, IN * k * k), "alpha": s(1.5)}


def build_cases():
    """(name, layer kind, [(parts, multiplier, dyn_dim)], te-flag unused) per case."""
    C = []

    def add(name, kind, nets, bias=True):
        C.append((name, kind, nets, bias))

    # LoRA / LoCon
    add("lora_linear", "linear", [(lora_parts("linear", alpha=2.0), 1.0, None)])
    add("lora_linear_mult", "linear", [(lora_parts("linear", alpha=2.0), 0.7, None)])
    add("lora_linear_noalpha", "linear", [(lora_parts("linear"), -0.5, None)])
    add("lora_linear_dyn", "linear", [(lora_parts("linear", rank=6, alpha=3.0), 0.8, 2)])
    add("lora_linear_dyn_over", "linear", [(lora_parts("linear", rank=3, alpha=3.0), 1.0, 10)])
    add("lora_linear_scale", "linear", [({**lora_parts("linear", alpha=2.0), "scale": s(0.3)}, 1.2, None)])
    add("lora_linear_4d_parts", "linear", [({"lora_down.weight": r(4, IN, 1, 1), "lora_up.weight": r(OUT, 4, 1, 1),
                                            "alpha": s(4.0)}, 1.0, None)])
    add("lora_linear_netbias", "linear", [({**lora_parts("linear", alpha=2.0), "bias": r(OUT, IN)}, 0.6, None)])
    add("lora_peft", "linear", [({"lora_A.weight": r(4, IN), "lora_B.weight": r(OUT, 4), "alpha": s(1.0),
                                 "dora_scale": r(1, IN)}, 0.9, None)])
    add("lora_conv1x1", "conv1x1", [(lora_parts("conv1x1", alpha=1.0), 1.0, None)])
    add("lora_conv1x1_2d", "conv1x1", [({"lora_down.weight": r(4, IN), "lora_up.weight": r(OUT, 4),
                                        "alpha": s(3.0)}, 0.5, None)])
    add("lora_conv3x3", "conv3x3", [(lora_parts("conv3x3", conv_kernel=True, alpha=2.0), 1.0, None)])
    add("lora_conv3x3_dyn", "conv3x3", [(lora_parts("conv3x3", rank=5, conv_kernel=True, alpha=2.0), 1.3, 3)])
    add("lora_conv3x3_from1x1", "conv3x3", [(lora_parts("conv1x1", alpha=2.0), 1.0, None)])
    add("lora_conv3x3_tucker", "conv3x3", [(lora_parts("conv3x3", tucker=True, alpha=2.0), 0.75, 2)])
    add("lora_conv1x1_nobias", "conv1x1", [(lora_parts("conv1x1", alpha=1.0), 1.0, None)], bias=False)
    # DoRA
    add("dora_linear", "linear", [({**lora_parts("linear", alpha=2.0), "dora_scale": r(1, IN).abs() + 0.5}, 0.8, None)])
    add("dora_linear_out", "linear", [({**lora_parts("linear", alpha=2.0), "dora_scale": r(OUT, 1).abs() + 0.5}, 1.0, None)])
    add("dora_conv3x3", "conv3x3", [({**lora_parts("conv3x3", conv_kernel=True, alpha=2.0),
                                     "dora_scale": r(1, IN, 1, 1).abs() + 0.5}, 0.6, None)])
    add("dora_conv1x1", "conv1x1", [({**lora_parts("conv1x1", alpha=4.0),
                                     "dora_scale": r(1, IN, 1, 1).abs() + 0.5}, 1.0, None)])
    # several networks on one layer, in order
    add("fold_lora_lora", "linear", [(lora_parts("linear", alpha=2.0), 0.8, None),
                                     (lora_parts("linear", rank=2, alpha=1.0), 1.1, None)])
    add("fold_dora_after_lora", "conv3x3", [(lora_parts("conv3x3", conv_kernel=True, alpha=2.0), 1.0, None),
                                            ({**lora_parts("conv3x3", conv_kernel=True, alpha=2.0),
                                              "dora_scale": r(1, IN, 1, 1).abs() + 0.5}, 0.5, None)])
    add("fold_ia3_full_lora", "linear", [({"weight": r(OUT), "on_input": s(0)}, 0.5, None),
                                         ({"diff": r(OUT, IN), "diff_b": r(OUT)}, 1.0, None),
                                         (lora_parts("linear", alpha=2.0), 0.7, None)])
    # inpainting conv_in (9 input channels; a 4-channel network is padded)
    add("inpaint_lora", "inpaint", [(lora_parts("conv3x3", conv_kernel=True, alpha=2.0, in_ch=4), 0.9, None)])
    add("inpaint_fold", "inpaint", [(lora_parts("conv3x3", conv_kernel=True, alpha=2.0, in_ch=4), 1.0, None),
                                    ({"diff": r(OUT, 4, 3, 3), "diff_b": r(OUT)}, 0.5, None)])
    # LoHa
    add("hada_linear", "linear", [(hada_parts("linear"), 0.8, None)])
    add("hada_linear_dyn_ignored", "linear", [(hada_parts("linear"), 1.0, 1)])
    add("hada_conv1x1", "conv1x1", [(hada_parts("conv1x1"), 1.0, None)])
    add("hada_conv3x3", "conv3x3", [(hada_parts("conv3x3"), 1.2, None)])
    add("hada_conv3x3_tucker", "conv3x3", [(hada_parts("conv3x3", tucker=True), 0.9, None)])
    add("hada_conv3x3_4d", "conv3x3", [({"hada_w1_a": r(OUT, 2, 1, 1), "hada_w1_b": r(2, IN, 3, 3),
                                        "hada_w2_a": r(OUT, 2, 1, 1), "hada_w2_b": r(2, IN, 3, 3)}, 1.0, None)])
    # LoKr
    add("lokr_linear_full", "linear", [({"lokr_w1": r(2, 2), "lokr_w2": r(4, 3)}, 1.0, None)])
    add("lokr_linear_factored", "linear", [({"lokr_w1": r(4, 2), "lokr_w2_a": r(2, 2), "lokr_w2_b": r(2, 3),
                                            "alpha": s(1.0)}, 0.7, None)])
    add("lokr_linear_both_factored", "linear", [({"lokr_w1_a": r(2, 3), "lokr_w1_b": r(3, 3),
                                                 "lokr_w2_a": r(4, 2), "lokr_w2_b": r(2, 2),
                                                 "alpha": s(3.0)}, 1.0, None)])
    add("lokr_conv1x1", "conv1x1", [({"lokr_w1": r(2, 3), "lokr_w2": r(4, 2, 1, 1)}, 1.0, None)])
    add("lokr_conv3x3", "conv3x3", [({"lokr_w1": r(2, 2), "lokr_w2": r(4, 3, 3, 3), "scale": s(0.5)}, 1.0, None)])
    add("lokr_conv3x3_2d_w2", "conv3x3", [({"lokr_w1": r(2, 2), "lokr_w2_a": r(4, 2), "lokr_w2_b": r(2, 27),
                                           "alpha": s(1.0)}, 0.9, None)])
    add("lokr_conv3x3_tucker", "conv3x3", [({"lokr_w1": r(2, 3), "lokr_w2_a": r(2, 4), "lokr_w2_b": r(2, 2),
                                            "lokr_t2": r(2, 2, 3, 3), "alpha": s(1.0)}, 1.0, None)])
    # IA3
    add("ia3_linear_out", "linear", [({"weight": r(OUT), "on_input": s(0)}, 1.0, None)])
    add("ia3_linear_in", "linear", [({"weight": r(IN), "on_input": s(1)}, 0.6, None)])
    add("ia3_conv1x1_in", "conv1x1", [({"weight": r(1, IN, 1, 1), "on_input": s(1)}, 1.0, None)])
    add("ia3_conv3x3_in", "conv3x3", [({"weight": r(1, IN, 1, 1), "on_input": s(1), "scale": s(0.5)}, 1.0, None)])
    # full / diff
    add("full_linear", "linear", [({"diff": r(OUT, IN), "diff_b": r(OUT)}, 0.5, None)])
    add("full_linear_nobias", "linear", [({"diff": r(OUT, IN), "diff_b": r(OUT), "scale": s(2.0)}, 0.5, None)], bias=False)
    add("full_conv1x1", "conv1x1", [({"diff": r(OUT, IN, 1, 1)}, 1.0, None)])
    add("full_conv3x3", "conv3x3", [({"diff": r(OUT, IN, 3, 3), "diff_b": r(OUT)}, 1.0, None)])
    add("full_norm", "norm", [({"diff": r(OUT), "diff_b": r(OUT)}, 0.8, None)])
    add("full_linear_rowdiff", "linear", [({"diff": r(IN)}, 1.0, None)])
    # norm (w_norm / b_norm)
    add("norm_groupnorm", "norm", [({"w_norm": r(OUT), "b_norm": r(OUT)}, 0.7, None)])
    add("norm_layernorm", "layernorm", [({"w_norm": r(OUT), "b_norm": r(OUT)}, 1.0, None)])
    # GLoRA
    add("glora_linear", "linear", [({"a1.weight": r(3, IN), "a2.weight": r(IN, 3), "b1.weight": r(3, IN),
                                    "b2.weight": r(OUT, 3), "alpha": s(3.0)}, 0.8, None)])
    # OFT: kohya oft_blocks (constraint alpha), LyCORIS oft_diag, BOFT
    add("oft_kohya_linear", "linear", [({"oft_blocks": r(2, 4, 4), "alpha": s(1e-3)}, 1.0, None)])
    add("oft_kohya_linear_noclamp", "linear", [({"oft_blocks": r(4, 2, 2)}, 0.6, None)])
    add("oft_kohya_conv3x3", "conv3x3", [({"oft_blocks": r(2, 4, 4), "alpha": s(0.5)}, 1.0, None)])
    add("oft_kohya_conv1x1", "conv1x1", [({"oft_blocks": r(4, 2, 2), "alpha": s(10.0)}, 1.0, None)])
    add("oft_diag_linear", "linear", [({"oft_diag": r(2, 4, 4), "alpha": s(5.0)}, 1.0, None)])
    add("oft_diag_conv3x3", "conv3x3", [({"oft_diag": r(4, 2, 2)}, 0.8, None)])
    add("oft_diag_shared_block", "linear", [({"oft_diag": r(1, 4, 4)}, 1.0, None)])
    add("oft_rescale_linear", "linear", [({"oft_blocks": r(2, 4, 4), "rescale": r(OUT, 1) + 1.0}, 1.0, None)])
    add("boft_linear", "linear", [({"oft_blocks": r(2, 2, 4, 4), "alpha": s(0.0)}, 1.0, None)])
    add("boft_conv3x3", "conv3x3", [({"oft_blocks": r(3, 4, 2, 2), "alpha": s(0.05),
                                     "rescale": r(OUT) + 1.0}, 0.7, None)])
    add("oft_dora_linear", "linear", [({"oft_blocks": r(2, 4, 4), "dora_scale": r(1, IN).abs() + 0.5}, 1.0, None)])
    return C


def build_error_cases():
    """Parts A1111 refuses: (name, layer kind, parts). The stage it fails at is recorded:
    `load` (create_module: the whole network fails to load) or `apply` (calc_updown or the add:
    a RuntimeError is logged and the network skipped on that layer; another exception fails the
    generation)."""
    E = []

    def add(name, kind, parts):
        E.append((name, kind, parts))

    add("err_lora_inner", "linear", {"lora_up.weight": r(OUT, 4), "lora_down.weight": r(3, IN)})
    add("err_lora_on_norm", "norm", {"lora_up.weight": r(OUT, 2), "lora_down.weight": r(2, OUT)})
    add("err_lora_down_3d_conv", "conv3x3", {"lora_up.weight": r(OUT, 2, 1, 1), "lora_down.weight": r(2, IN, 3)})
    add("err_lora_3x3_on_1x1", "conv1x1", {"lora_up.weight": r(OUT, 2, 1, 1), "lora_down.weight": r(2, IN, 3, 3)})
    add("err_lora_mid_linear", "linear", {"lora_up.weight": r(OUT, 2), "lora_down.weight": r(2, IN),
                                          "lora_mid.weight": r(2, 2, 3, 3)})
    add("err_lora_alpha_2", "linear", {"lora_up.weight": r(OUT, 2), "lora_down.weight": r(2, IN), "alpha": r(2)})
    add("err_inpaint_9ch_lora", "inpaint", {"lora_up.weight": r(OUT, 2, 1, 1), "lora_down.weight": r(2, 9, 3, 3)})
    add("err_lokr_conv_kron", "conv3x3", {"lokr_w1": r(2, 2), "lokr_w2": r(3, 3, 3, 3)})
    add("err_lokr_linear_small", "linear", {"lokr_w1": r(2, 2), "lokr_w2": r(3, 3)})
    add("err_oft_blocks_count", "linear", {"oft_blocks": r(3, 4, 4)})
    add("err_oft_diag_size", "linear", {"oft_diag": r(2, 3, 3)})
    add("err_boft_blocks", "linear", {"oft_blocks": r(2, 3, 4, 4)})
    add("err_oft_on_norm", "norm", {"oft_blocks": r(2, 4, 4)})
    add("err_oft_rescale", "linear", {"oft_blocks": r(2, 4, 4), "rescale": r(3)})
    add("err_ia3_out_conv3x3", "conv3x3", {"weight": r(OUT), "on_input": s(0)})
    add("err_ia3_no_on_input", "linear", {"weight": r(OUT)})
    add("err_glora_conv1x1", "conv1x1", {"a1.weight": r(2, IN, 1, 1), "a2.weight": r(IN, 2, 1, 1),
                                         "b1.weight": r(2, IN, 1, 1), "b2.weight": r(OUT, 2, 1, 1), "alpha": s(1.0)})
    add("err_hada_t1", "conv3x3", {"hada_w1_a": r(2, OUT), "hada_w1_b": r(2, IN), "hada_w2_a": r(OUT, 2),
                                   "hada_w2_b": r(2, IN), "hada_t1": r(3, 2, 3, 3)})
    add("err_dora_on_norm", "norm", {"diff": r(OUT), "dora_scale": r(OUT)})
    add("err_full_bias_shape", "linear", {"diff": r(OUT, IN), "diff_b": r(3)})
    return E


def run_error_case(layer, parts):
    """The stage A1111 fails at and the exception's class."""
    try:
        module = create_module(Network(), NetworkWeights("diffusion_model_x", dict(parts), layer))
    except Exception as e:  # noqa: BLE001 - any exception fails the network's load
        return "load", type(e).__name__
    try:
        apply_weights(layer, [module])
    except Exception as e:  # noqa: BLE001
        return "apply", type(e).__name__
    return None, None


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(20261206)
    tensors, cases = {}, []
    for name, kind, nets, bias in build_cases():
        layer = make_layer(kind, bias=bias)
        with torch.no_grad():
            layer.weight.copy_(r(*layer.weight.shape))
            if layer.bias is not None:
                layer.bias.copy_(r(*layer.bias.shape))
        tensors[f"{name}/weight"] = layer.weight.detach().clone()
        if layer.bias is not None:
            tensors[f"{name}/bias"] = layer.bias.detach().clone()
        modules, net_meta = [], []
        for i, (parts, mult, dyn) in enumerate(nets):
            for k, v in parts.items():
                tensors[f"{name}/net{i}/{k}"] = v.clone()
            net_meta.append({"parts": sorted(parts), "multiplier": mult, "dyn_dim": dyn})
            w = NetworkWeights("diffusion_model_x", dict(parts), layer)
            modules.append(create_module(Network(unet_multiplier=mult, dyn_dim=dyn), w))
        steps = apply_weights(layer, modules)
        for i, (updown, ex_bias) in enumerate(steps):
            tensors[f"{name}/updown{i}"] = updown.contiguous()
            net_meta[i]["kind"] = type(modules[i]).__name__
            if ex_bias is not None:
                tensors[f"{name}/ex_bias{i}"] = ex_bias.contiguous()
            net_meta[i]["ex_bias"] = ex_bias is not None
        tensors[f"{name}/out_weight"] = layer.weight.detach().clone()
        if layer.bias is not None:
            tensors[f"{name}/out_bias"] = layer.bias.detach().clone()
        cases.append({"name": name, "layer": kind, "bias": bias, "out_bias": layer.bias is not None,
                      "networks": net_meta})
    errors = []
    for name, kind, parts in build_error_cases():
        layer = make_layer(kind)
        with torch.no_grad():
            layer.weight.copy_(r(*layer.weight.shape))
            if layer.bias is not None:
                layer.bias.copy_(r(*layer.bias.shape))
        tensors[f"{name}/weight"] = layer.weight.detach().clone()
        if layer.bias is not None:
            tensors[f"{name}/bias"] = layer.bias.detach().clone()
        for k, v in parts.items():
            tensors[f"{name}/net0/{k}"] = v.clone()
        stage, exc = run_error_case(layer, parts)
        if stage is None:
            raise AssertionError(f"{name}: A1111's restatement accepts it")
        # What the layer holds after the failure (a failing bias add leaves the weight merged).
        tensors[f"{name}/out_weight"] = layer.weight.detach().clone()
        errors.append({"name": name, "layer": kind, "bias": layer.bias is not None, "parts": sorted(parts),
                       "stage": stage, "exception": exc})
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out_dir, "cases.safetensors"))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_network_math_fixtures.py",
                   "source": "A1111 v1.10.1 extensions-builtin/Lora", "cases": cases,
                   "errors": errors}, f, indent=1)
    print(f"{len(cases)} cases, {len(errors)} error cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
