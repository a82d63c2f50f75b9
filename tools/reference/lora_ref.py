"""A1111 v1.10.1's LoRA / LyCORIS merge, restated (nothing is imported from A1111).

Sources restated, all under extensions-builtin/Lora/ of stable-diffusion-webui v1.10.1:
  networks.py   convert_diffusers_name_to_compvis, assign_network_names_to_compvis_modules,
                load_network (key matching), network_apply_weights (the in-place merge);
  network.py    NetworkModule (multiplier, calc_scale, finalize_updown, apply_weight_decompose);
  network_lora.py, network_hada.py, network_ia3.py, network_lokr.py, network_full.py,
  network_norm.py, network_glora.py, network_oft.py (create_module + calc_updown);
  lyco_helpers.py (make_weight_cp, rebuild_conventional, rebuild_cp_decomposition);
  extra_networks_lora.py (the <lora:name:te:unet:dyn> parameters).

The model is described by its LDM (A1111 single-file) state dict: module names are the LDM keys
without `model.` / `cond_stage_model.` and the parameter name, dots turned into underscores, as
A1111's network_layer_mapping names them. All math is f32 (A1111 run with --no-half).
"""
import re

import torch

# ---------------------------------------------------------------------------------------------
# names (networks.py)

RE_DIGITS = re.compile(r"\d+")
RE_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")
SUFFIX_CONVERSION = {
    "attentions": {},
    "resnets": {
        "conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0",
        "norm2": "out_layers_0", "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection",
    },
}


def convert_diffusers_name_to_compvis(key, is_sd2):
    def match(regex):
        r = re.match(regex, key)
        if not r:
            return None
        return [int(x) if re.match(RE_DIGITS, x) else x for x in r.groups()]

    if (m := match(r"lora_unet_conv_in(.*)")) is not None:
        return f"diffusion_model_input_blocks_0_0{m[0]}"
    if (m := match(r"lora_unet_conv_out(.*)")) is not None:
        return f"diffusion_model_out_2{m[0]}"
    if (m := match(r"lora_unet_time_embedding_linear_(\d+)(.*)")) is not None:
        return f"diffusion_model_time_embed_{m[0] * 2 - 2}{m[1]}"
    if (m := match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)")) is not None:
        suffix = SUFFIX_CONVERSION.get(m[1], {}).get(m[3], m[3])
        return f"diffusion_model_input_blocks_{1 + m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if (m := match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)")) is not None:
        suffix = SUFFIX_CONVERSION.get(m[0], {}).get(m[2], m[2])
        return f"diffusion_model_middle_block_{1 if m[0] == 'attentions' else m[1] * 2}_{suffix}"
    if (m := match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)")) is not None:
        suffix = SUFFIX_CONVERSION.get(m[1], {}).get(m[3], m[3])
        return f"diffusion_model_output_blocks_{m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if (m := match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv")) is not None:
        return f"diffusion_model_input_blocks_{3 + m[0] * 3}_0_op"
    if (m := match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv")) is not None:
        return f"diffusion_model_output_blocks_{2 + m[0] * 3}_{2 if m[0] > 0 else 1}_conv"
    if (m := match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)")) is not None:
        if is_sd2:
            if "mlp_fc1" in m[1]:
                return f"model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc1', 'mlp_c_fc')}"
            if "mlp_fc2" in m[1]:
                return f"model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc2', 'mlp_c_proj')}"
            return f"model_transformer_resblocks_{m[0]}_{m[1].replace('self_attn', 'attn')}"
        return f"transformer_text_model_encoder_layers_{m[0]}_{m[1]}"
    if (m := match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)")) is not None:
        if "mlp_fc1" in m[1]:
            return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc1', 'mlp_c_fc')}"
        if "mlp_fc2" in m[1]:
            return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc2', 'mlp_c_proj')}"
        return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('self_attn', 'attn')}"
    return key


class Layer:
    """One torch module of the model as A1111's network_layer_mapping holds it.
    kind: linear | conv | groupnorm | layernorm | mha | mha_out (an MHA's out_proj Linear) |
    embedding | container."""

    def __init__(self, name, kind, weight_key=None, bias_key=None, out_proj=None):
        self.name, self.kind = name, kind
        self.weight_key, self.bias_key = weight_key, bias_key
        self.out_proj = out_proj  # mha: (weight_key, bias_key) of its out_proj Linear


def layer_mapping(ldm_sd, is_sd2):
    """A1111's network_layer_mapping for an SD1/SD2 model given by its LDM state dict:
    cond_stage_model(.wrapped).named_modules() and model.named_modules(), dots -> '_'.
    An SDXL model given by its SGM state dict: each conditioner embedder's wrapped modules named
    f'{i}_{name}' (conditioner.embedders.<i>.<name>), the U-Net as above."""
    layers = {}
    for key, t in ldm_sd.items():
        if key.startswith("model.diffusion_model."):
            path = key[len("model."):]
        elif key.startswith("cond_stage_model."):
            path = key[len("cond_stage_model."):]
        elif key.startswith("conditioner.embedders."):
            path = key[len("conditioner.embedders."):]
        else:
            continue
        mod, _, param = path.rpartition(".")
        parts = mod.split(".")
        for i in range(len(parts)):  # containers (named_modules lists every submodule)
            n = "_".join(parts[:i])
            layers.setdefault(n, Layer(n, "container"))
        name = mod.replace(".", "_")
        if param == "in_proj_weight":
            layers[name] = Layer(name, "mha", weight_key=key)
            continue
        if param in ("in_proj_bias", "positional_embedding", "text_projection", "logit_scale"):
            continue
        if mod.endswith("embedding") and not is_sd2 or mod.endswith("token_embedding"):
            kind = "embedding"
        elif t.dim() == 4:
            kind = "conv"
        elif t.dim() == 2:
            kind = "linear"
        elif "transformer" in mod or "ln_" in mod or "layer_norm" in mod:
            kind = "layernorm"
        else:
            kind = "groupnorm"
        lay = layers.get(name)
        if lay is None or lay.kind == "container":
            lay = layers[name] = Layer(name, kind)
        if param == "weight":
            lay.weight_key = key
        elif param == "bias":
            lay.bias_key = key
    for lay in layers.values():
        if lay.kind == "mha":
            o = layers[lay.name + "_out_proj"]
            o.kind = "mha_out"  # a Linear whose forward never runs (MHA reads its tensors)
            lay.out_proj = (o.weight_key, o.bias_key)
            lay.bias_key = lay.weight_key.replace("in_proj_weight", "in_proj_bias")
    return layers


# ---------------------------------------------------------------------------------------------
# modules (network.py, network_*.py, lyco_helpers.py)

def make_weight_cp(t, wa, wb):
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)


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
    return torch.einsum("n m k l, i n, m j -> i j k l", mid, up, down)


class Net:
    """A loaded network with its prompt parameters (network.Network)."""

    def __init__(self, name, te_multiplier=1.0, unet_multiplier=1.0, dyn_dim=None):
        self.name = name
        self.te_multiplier, self.unet_multiplier, self.dyn_dim = te_multiplier, unet_multiplier, dyn_dim
        self.modules = {}
        self.unmatched = {}
        self.bundle_embeddings = {}


class Module:
    """network.NetworkModule + the type-specific subclasses, chosen by `kind`."""

    def __init__(self, net, sd_key, w, layer, ldm):
        self.net, self.sd_key, self.w, self.layer = net, sd_key, w, layer
        if layer.kind == "mha":
            self.shape = ldm[layer.out_proj[0]].shape
        elif layer.weight_key is not None:
            self.shape = ldm[layer.weight_key].shape
        else:
            self.shape = None
        self.dim = None
        self.bias = w.get("bias")
        self.alpha = w["alpha"].item() if "alpha" in w else None
        self.scale = w["scale"].item() if "scale" in w else None
        self.dora_scale = w.get("dora_scale")
        self.dora_norm_dims = len(self.shape) - 1 if self.shape is not None else None
        self.kind = None
        for kind, ok in (
            ("lora", ("lora_up.weight" in w and "lora_down.weight" in w) or ("lora_A.weight" in w and "lora_B.weight" in w)),
            ("hada", all(x in w for x in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))),
            ("ia3", "weight" in w),
            ("lokr", ("lokr_w1" in w or ("lokr_w1_a" in w and "lokr_w1_b" in w))
             and ("lokr_w2" in w or ("lokr_w2_a" in w and "lokr_w2_b" in w))),
            ("full", "diff" in w),
            ("norm", "w_norm" in w and "b_norm" in w),
            ("glora", all(x in w for x in ("a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"))),
            ("oft", "oft_blocks" in w or "oft_diag" in w),
        ):
            if ok:
                self.kind = kind
                break
        if self.kind is None:
            raise ValueError(f"no module type accepts the keys: {', '.join(w)}")
        getattr(self, "_init_" + self.kind)()

    # -- construction ------------------------------------------------------------------------
    def _init_lora(self):
        w = self.w
        if not ("lora_up.weight" in w and "lora_down.weight" in w):
            # A1111 replaces the dict's contents *before* NetworkModule.__init__ reads it: a
            # PEFT-style module loses its alpha, scale, bias and dora_scale
            w = {"lora_up.weight": w["lora_B.weight"], "lora_down.weight": w["lora_A.weight"]}
            self.w = w
            self.alpha = self.scale = self.bias = self.dora_scale = None
        is_linear = self.layer.kind in ("linear", "mha", "mha_out")
        is_conv = self.layer.kind == "conv"
        if not (is_linear or is_conv):
            raise ValueError(f"Lora layer matched a layer with unsupported type: {self.layer.kind}")

        def shaped(key):
            t = w.get(key)
            if t is None:
                return None
            t = t.float()
            if is_linear:
                return t.reshape(t.shape[0], -1)
            if key == "lora_down.weight" and t.dim() == 2:
                return t.reshape(t.shape[0], -1, 1, 1)
            if key == "lora_up.weight":
                return t.reshape(t.shape[0], -1, 1, 1)
            return t  # lora_mid / conv down 4-D as stored

        self.up, self.down, self.mid = shaped("lora_up.weight"), shaped("lora_down.weight"), shaped("lora_mid.weight")
        self.dim = w["lora_down.weight"].shape[0]

    def _init_hada(self):
        w = self.w
        self.w1a, self.w1b, self.w2a, self.w2b = (w[k].float() for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
        self.dim = self.w1b.shape[0]
        self.t1 = w["hada_t1"].float() if "hada_t1" in w else None
        self.t2 = w["hada_t2"].float() if "hada_t2" in w else None

    def _init_ia3(self):
        self.iw = self.w["weight"].float()
        self.on_input = self.w["on_input"].item()

    def _init_lokr(self):
        g = lambda k: self.w[k].float() if k in self.w else None  # noqa: E731
        self.w1, self.w1a, self.w1b = g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b")
        self.dim = self.w1b.shape[0] if self.w1b is not None else self.dim
        self.w2, self.w2a, self.w2b = g("lokr_w2"), g("lokr_w2_a"), g("lokr_w2_b")
        self.dim = self.w2b.shape[0] if self.w2b is not None else self.dim
        self.t2 = g("lokr_t2")

    def _init_full(self):
        self.diff = self.w["diff"].float()
        self.diff_b = self.w["diff_b"].float() if "diff_b" in self.w else None

    def _init_norm(self):
        self.w_norm = self.w["w_norm"].float()
        self.b_norm = self.w["b_norm"].float() if "b_norm" in self.w else None

    def _init_glora(self):
        self.a1, self.b1, self.a2, self.b2 = (self.w[k].float() for k in ("a1.weight", "b1.weight", "a2.weight", "b2.weight"))

    def _init_oft(self):
        w = self.w
        self.scale = 1.0
        self.is_R = False
        self.is_boft = False
        if "oft_blocks" in w:
            self.oft_blocks = w["oft_blocks"].float()
            self.alpha = w.get("alpha")  # a tensor here (the constraint)
            self.dim = self.oft_blocks.shape[0]
        else:
            self.is_R = True
            self.oft_blocks = w["oft_diag"].float()
            self.dim = self.oft_blocks.shape[1]
        if self.layer.kind not in ("linear", "conv", "mha_out"):
            raise ValueError("OFT on an unsupported layer")
        self.out_dim = self.shape[0]
        if self.oft_blocks.dim() == 4:
            self.is_boft = True
        self.rescale = w.get("rescale")
        if self.rescale is not None:
            self.rescale = self.rescale.float().reshape(-1, *[1] * (len(self.shape) - 1))
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

    # -- network.NetworkModule ---------------------------------------------------------------
    def multiplier(self):
        if "transformer" in self.sd_key[:20]:
            return self.net.te_multiplier
        return self.net.unet_multiplier

    def calc_scale(self):
        if self.scale is not None:
            return self.scale
        if self.dim is not None and self.alpha is not None:
            return self.alpha / self.dim
        return 1.0

    def apply_weight_decompose(self, updown, orig_weight):
        orig_weight = orig_weight.to(updown.dtype)
        dora_scale = self.dora_scale.float()
        merged = updown + orig_weight
        norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
                .reshape(merged.shape[1], *[1] * self.dora_norm_dims).transpose(0, 1))
        return merged * (dora_scale / norm) - orig_weight

    def finalize_updown(self, updown, orig_weight, output_shape, ex_bias=None):
        if self.bias is not None:
            updown = updown.reshape(self.bias.shape)
            updown = updown + self.bias.float()
            updown = updown.reshape(output_shape)
        if len(output_shape) == 4:
            updown = updown.reshape(output_shape)
        if orig_weight.numel() == updown.numel():
            updown = updown.reshape(orig_weight.shape)
        if ex_bias is not None:
            ex_bias = ex_bias * self.multiplier()
        updown = updown * self.calc_scale()
        if self.dora_scale is not None:
            updown = self.apply_weight_decompose(updown, orig_weight)
        return updown * self.multiplier(), ex_bias

    def calc_updown(self, orig_weight):
        return getattr(self, "_updown_" + self.kind)(orig_weight)

    # -- calc_updown per type ------------------------------------------------------------------
    def _updown_lora(self, orig_weight):
        up, down = self.up, self.down
        output_shape = [up.size(0), down.size(1)]
        if self.mid is not None:
            updown = rebuild_cp_decomposition(up, down, self.mid)
            output_shape += self.mid.shape[2:]
        else:
            if len(down.shape) == 4:
                output_shape += down.shape[2:]
            updown = rebuild_conventional(up, down, output_shape, self.net.dyn_dim)
        return self.finalize_updown(updown, orig_weight, output_shape)

    def _updown_hada(self, orig_weight):
        w1a, w1b, w2a, w2b = self.w1a, self.w1b, self.w2a, self.w2b
        output_shape = [w1a.size(0), w1b.size(1)]
        if self.t1 is not None:
            output_shape = [w1a.size(1), w1b.size(1)]
            updown1 = make_weight_cp(self.t1, w1a, w1b)
            output_shape += self.t1.shape[2:]
        else:
            if len(w1b.shape) == 4:
                output_shape += w1b.shape[2:]
            updown1 = rebuild_conventional(w1a, w1b, output_shape)
        if self.t2 is not None:
            updown2 = make_weight_cp(self.t2, w2a, w2b)
        else:
            updown2 = rebuild_conventional(w2a, w2b, output_shape)
        return self.finalize_updown(updown1 * updown2, orig_weight, output_shape)

    def _updown_ia3(self, orig_weight):
        w = self.iw
        output_shape = [w.size(0), orig_weight.size(1)]
        if self.on_input:
            output_shape.reverse()
        else:
            w = w.reshape(-1, 1)
        return self.finalize_updown(orig_weight * w, orig_weight, output_shape)

    def _updown_lokr(self, orig_weight):
        w1 = self.w1 if self.w1 is not None else self.w1a @ self.w1b
        if self.w2 is not None:
            w2 = self.w2
        elif self.t2 is None:
            w2 = self.w2a @ self.w2b
        else:
            w2 = make_weight_cp(self.t2, self.w2a, self.w2b)
        output_shape = [w1.size(0) * w2.size(0), w1.size(1) * w2.size(1)]
        if len(orig_weight.shape) == 4:
            output_shape = orig_weight.shape
        if len(w2.shape) == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        updown = torch.kron(w1, w2.contiguous()).reshape(output_shape)
        return self.finalize_updown(updown, orig_weight, output_shape)

    def _updown_full(self, orig_weight):
        return self.finalize_updown(self.diff, orig_weight, self.diff.shape, self.diff_b)

    def _updown_norm(self, orig_weight):
        return self.finalize_updown(self.w_norm, orig_weight, self.w_norm.shape, self.b_norm)

    def _updown_glora(self, orig_weight):
        output_shape = [self.a1.size(0), self.b1.size(1)]
        updown = (self.b2 @ self.b1) + ((orig_weight @ self.a2) @ self.a1)
        return self.finalize_updown(updown, orig_weight, output_shape)

    def _updown_oft(self, orig_weight):
        from einops import rearrange
        oft_blocks = self.oft_blocks
        eye = torch.eye(self.block_size)
        if not self.is_R:
            block_q = oft_blocks - oft_blocks.transpose(-1, -2)
            if self.constraint != 0:
                norm_q = torch.norm(block_q.flatten())
                new_norm_q = torch.clamp(norm_q, max=self.constraint.float())
                block_q = block_q * ((new_norm_q + 1e-8) / (norm_q + 1e-8))
            oft_blocks = torch.matmul(eye + block_q, (eye - block_q).float().inverse())
        R = oft_blocks
        if not self.is_boft:
            mw = rearrange(orig_weight, "(k n) ... -> k n ...", k=self.num_blocks, n=self.block_size)
            mw = torch.einsum("k n m, k n ... -> k m ...", R, mw)
            mw = rearrange(mw, "k m ... -> (k m) ...")
        else:
            m, b = self.boft_m, self.boft_b
            r_b = b // 2
            inp = orig_weight
            for i in range(m):
                bi = R[i]
                inp = rearrange(inp, "(c g k) ... -> (c k g) ...", g=2, k=2 ** i * r_b)
                inp = rearrange(inp, "(d b) ... -> d b ...", b=b)
                inp = torch.einsum("b i j, b j ... -> b i ...", bi, inp)
                inp = rearrange(inp, "d b ... -> (d b) ...")
                inp = rearrange(inp, "(c k g) ... -> (c g k) ...", g=2, k=2 ** i * r_b)
            mw = inp
        if self.rescale is not None:
            mw = self.rescale * mw
        return self.finalize_updown(mw - orig_weight, orig_weight, orig_weight.shape)


# ---------------------------------------------------------------------------------------------
# load_network

def load_network(net, sd, layers, ldm, is_sd2):
    """networks.load_network: match the file's keys to the model's layers and build modules.
    `sd` is the file's state dict (A1111's read_state_dict; no diffusers_weight_map on SD1/SD2)."""
    matched = {}
    bundle = {}
    for key_network, weight in sd.items():
        base, _, part = key_network.partition(".")
        if base == "bundle_emb":
            emb_name, vec_name = part.split(".", 1)
            d = bundle.get(emb_name, {})
            if vec_name.split(".")[0] == "string_to_param":
                _, k2 = vec_name.split(".", 1)
                d["string_to_param"] = {k2: weight}
            else:
                d[vec_name] = weight
            bundle[emb_name] = d
        key = convert_diffusers_name_to_compvis(base, is_sd2)
        lay = layers.get(key)
        if lay is None:
            m = RE_X_PROJ.match(key)
            if m:
                lay = layers.get(m.group(1))
        if lay is None and "lora_unet" in base:
            key = base.replace("lora_unet", "diffusion_model")
            lay = layers.get(key)
        elif lay is None and "lora_te1_text_model" in base:
            key = base.replace("lora_te1_text_model", "0_transformer_text_model")
            lay = layers.get(key)
            if lay is None:
                key = base.replace("lora_te1_text_model", "transformer_text_model")
                lay = layers.get(key)
        elif lay is None and "oft_unet" in base:
            key = base.replace("oft_unet", "diffusion_model")
            lay = layers.get(key)
        if lay is None and "oft_diag" in key:
            key = base.replace("lora_unet", "diffusion_model")  # (A1111 overwrites this line's result)
            key = base.replace("lora_te1_text_model", "0_transformer_text_model")
            lay = layers.get(key)
        if lay is None:
            net.unmatched[key_network] = key
            continue
        if key not in matched:
            matched[key] = (lay, {}, base)
        matched[key][1][part] = weight
    for key, (lay, w, base) in matched.items():
        net.modules[key] = Module(net, key, w, lay, ldm)
        net.modules[key].base = base  # the file's key prefix (NetworkWeights.network_key's)
    net.bundle_embeddings = bundle
    return net


# ---------------------------------------------------------------------------------------------
# network_apply_weights over the whole model

def apply_networks(ldm, layers, nets, ran=lambda layer: True):
    """network_apply_weights for every patched layer whose forward runs (`ran`), networks in
    prompt order. Returns (merged copy of the changed LDM tensors, errors: {net name: count},
    error_layers: [(net name, layer name, message)])."""
    out = {}
    errors = {}
    error_layers = []

    def cur(k):
        return out[k] if k in out else ldm[k].float()

    for lay in layers.values():
        if lay.kind not in ("linear", "conv", "groupnorm", "layernorm", "mha") or not ran(lay):
            continue
        for net in nets:
            module = net.modules.get(lay.name)
            if module is not None and lay.kind != "mha":
                try:
                    weight = cur(lay.weight_key)
                    bias = cur(lay.bias_key) if lay.bias_key else None
                    updown, ex_bias = module.calc_updown(weight)
                    if len(weight.shape) == 4 and weight.shape[1] == 9:
                        updown = torch.nn.functional.pad(updown, (0, 0, 0, 0, 0, 5))
                    # self.weight.copy_(weight + updown): the sum broadcasts, copy_ broadcasts
                    new_w = torch.empty(weight.shape).copy_(weight + updown)
                    out[lay.weight_key] = new_w
                    if ex_bias is not None:
                        if bias is None:  # A1111 creates the bias
                            lay.bias_key = lay.weight_key[: -len("weight")] + "bias"
                            out[lay.bias_key] = ex_bias.clone()
                        else:
                            out[lay.bias_key] = torch.empty(bias.shape).copy_(bias + ex_bias)
                except RuntimeError as e:
                    errors[net.name] = errors.get(net.name, 0) + 1
                    error_layers.append((net.name, lay.name, str(e)))
                continue
            mq = net.modules.get(lay.name + "_q_proj")
            mk = net.modules.get(lay.name + "_k_proj")
            mv = net.modules.get(lay.name + "_v_proj")
            mo = net.modules.get(lay.name + "_out_proj")
            if lay.kind == "mha" and mq and mk and mv and mo:
                try:
                    inw = cur(lay.weight_key)
                    ow_key, ob_key = lay.out_proj
                    qw, kw, vw = inw.chunk(3, 0)
                    uq, _ = mq.calc_updown(qw)
                    uk, _ = mk.calc_updown(kw)
                    uv, _ = mv.calc_updown(vw)
                    uo, ex_bias = mo.calc_updown(cur(ow_key))
                    new_in = inw.clone()
                    new_in += torch.vstack([uq, uk, uv])  # in-place, as A1111 (no broadcast growth)
                    new_o = cur(ow_key).clone()
                    new_o += uo
                    out[lay.weight_key] = new_in
                    out[ow_key] = new_o
                    if ex_bias is not None:
                        out[ob_key] = cur(ob_key) + ex_bias
                except RuntimeError as e:
                    errors[net.name] = errors.get(net.name, 0) + 1
                    error_layers.append((net.name, lay.name, str(e)))
                continue
            if module is None:
                continue
            errors[net.name] = errors.get(net.name, 0) + 1
            error_layers.append((net.name, lay.name, "couldn't find supported operation"))
    return out, errors, error_layers


def parse_lora_tag(args):
    """extra_networks_lora.activate for one <lora:...> tag's arguments (after the name);
    returns (te, unet, dyn)."""
    pos = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    te = float(pos[0]) if len(pos) > 0 else 1.0
    te = float(named.get("te", te))
    unet = float(pos[1]) if len(pos) > 1 else te
    unet = float(named.get("unet", unet))
    dyn = int(pos[2]) if len(pos) > 2 else None
    dyn = int(named["dyn"]) if "dyn" in named else dyn
    return te, unet, dyn


RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")


def strip_extra_networks(prompt):
    """extra_networks.parse_prompt: the tags removed (replaced by nothing) and their params."""
    found = []

    def repl(m):
        found.append((m.group(1), m.group(2).split(":")))
        return ""

    return re.sub(RE_EXTRA_NET, repl, prompt), found
