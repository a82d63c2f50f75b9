"""A1111 v1.10.1's hypernetworks restated (modules/hypernetworks/hypernetwork.py), without the
web UI: HypernetworkModule (the same torch.nn.Sequential, numbered the same way), parse_dropout_structure,
Hypernetwork.save (the dict torch.save writes) and .load, apply_hypernetworks.

The classes and functions below are A1111's, with `devices`/`shared` calls dropped (CPU, f32) and the
training-only parts (optimizer, weight init other than Normal) left out.
"""
import inspect

import torch

ACTIVATIONS = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}
ACTIVATIONS.update({name.lower(): cls for name, cls in inspect.getmembers(torch.nn.modules.activation)
                    if inspect.isclass(cls) and cls.__module__ == "torch.nn.modules.activation"})


class HypernetworkModule(torch.nn.Module):
    def __init__(self, dim, state_dict=None, layer_structure=None, activation_func=None,
                 add_layer_norm=False, activate_output=False, dropout_structure=None):
        super().__init__()
        self.multiplier = 1.0
        assert layer_structure is not None, "layer_structure must not be None"
        assert layer_structure[0] == 1, "Multiplier Sequence should start with size 1!"
        assert layer_structure[-1] == 1, "Multiplier Sequence should end with size 1!"
        linears = []
        for i in range(len(layer_structure) - 1):
            linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func == "linear" or activation_func is None or (i >= len(layer_structure) - 2 and not activate_output):
                pass
            elif activation_func in ACTIVATIONS:
                linears.append(ACTIVATIONS[activation_func]())
            else:
                raise RuntimeError(f"hypernetwork uses an unsupported activation function: {activation_func}")
            if add_layer_norm:
                linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                assert 0 < dropout_structure[i + 1] < 1, "Dropout probability should be 0 or float between 0 and 1!"
                linears.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*linears)
        if state_dict is not None:
            self.fix_old_state_dict(state_dict)
            self.load_state_dict(state_dict)
        else:
            for layer in self.linear:
                if type(layer) == torch.nn.Linear or type(layer) == torch.nn.LayerNorm:
                    torch.nn.init.normal_(layer.weight.data, mean=0.0, std=0.01)
                    torch.nn.init.normal_(layer.bias.data, mean=0.0, std=0)

    def fix_old_state_dict(self, state_dict):
        changes = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
                   "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}
        for fr, to in changes.items():
            x = state_dict.get(fr, None)
            if x is None:
                continue
            del state_dict[fr]
            state_dict[to] = x

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout):
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    dropout_values = [0]
    dropout_values.extend([0.3] * (len(layer_structure) - 3))
    if last_layer_dropout:
        dropout_values.append(0.3)
    else:
        dropout_values.append(0)
    dropout_values.append(0)
    return dropout_values


class Hypernetwork:
    def __init__(self, name=None, enable_sizes=None, layer_structure=None, activation_func=None,
                 add_layer_norm=False, use_dropout=False, activate_output=False, **kwargs):
        self.filename = None
        self.name = name
        self.layers = {}
        self.step = 0
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None
        self.layer_structure = layer_structure
        self.activation_func = activation_func
        self.weight_init = "Normal"
        self.add_layer_norm = add_layer_norm
        self.use_dropout = use_dropout
        self.activate_output = activate_output
        self.last_layer_dropout = kwargs.get("last_layer_dropout", True)
        self.dropout_structure = kwargs.get("dropout_structure", None)
        if self.dropout_structure is None:
            self.dropout_structure = parse_dropout_structure(self.layer_structure, self.use_dropout, self.last_layer_dropout)
        self.optional_info = None
        for size in enable_sizes or []:
            self.layers[size] = tuple(
                HypernetworkModule(size, None, self.layer_structure, self.activation_func, self.add_layer_norm,
                                   self.activate_output, dropout_structure=self.dropout_structure) for _ in range(2))
        self.eval()

    def eval(self):
        for layers in self.layers.values():
            for layer in layers:
                layer.eval()
                for param in layer.parameters():
                    param.requires_grad = False

    def set_multiplier(self, multiplier):
        for layers in self.layers.values():
            for layer in layers:
                layer.multiplier = multiplier
        return self

    def save(self, filename):
        state_dict = {}
        for k, v in self.layers.items():
            state_dict[k] = (v[0].state_dict(), v[1].state_dict())
        state_dict["step"] = self.step
        state_dict["name"] = self.name
        state_dict["layer_structure"] = self.layer_structure
        state_dict["activation_func"] = self.activation_func
        state_dict["is_layer_norm"] = self.add_layer_norm
        state_dict["weight_initialization"] = self.weight_init
        state_dict["sd_checkpoint"] = self.sd_checkpoint
        state_dict["sd_checkpoint_name"] = self.sd_checkpoint_name
        state_dict["activate_output"] = self.activate_output
        state_dict["use_dropout"] = self.use_dropout
        state_dict["dropout_structure"] = self.dropout_structure
        state_dict["last_layer_dropout"] = (self.dropout_structure[-2] != 0) if self.dropout_structure is not None else self.last_layer_dropout
        state_dict["optional_info"] = self.optional_info if self.optional_info else None
        torch.save(state_dict, filename)

    def load(self, filename):
        self.filename = filename
        state_dict = torch.load(filename, map_location="cpu", weights_only=False)
        self.layer_structure = state_dict.get("layer_structure", [1, 2, 1])
        self.activation_func = state_dict.get("activation_func", None)
        self.add_layer_norm = state_dict.get("is_layer_norm", False)
        self.dropout_structure = state_dict.get("dropout_structure", None)
        self.use_dropout = True if self.dropout_structure is not None and any(self.dropout_structure) else state_dict.get("use_dropout", False)
        self.activate_output = state_dict.get("activate_output", True)
        self.last_layer_dropout = state_dict.get("last_layer_dropout", False)
        if self.dropout_structure is None:
            self.dropout_structure = parse_dropout_structure(self.layer_structure, self.use_dropout, self.last_layer_dropout)
        for size, sd in state_dict.items():
            if type(size) == int:
                self.layers[size] = (
                    HypernetworkModule(size, sd[0], self.layer_structure, self.activation_func, self.add_layer_norm,
                                       self.activate_output, self.dropout_structure),
                    HypernetworkModule(size, sd[1], self.layer_structure, self.activation_func, self.add_layer_norm,
                                       self.activate_output, self.dropout_structure),
                )
        self.name = state_dict.get("name", self.name)
        self.eval()
        return self


def load_hypernetworks(paths, multipliers):
    """load_hypernetworks for a first job: each file read and given its multiplier, in order."""
    return [Hypernetwork().load(p).set_multiplier(m) for p, m in zip(paths, multipliers)]


def apply_single_hypernetwork(hypernetwork, context_k, context_v):
    hypernetwork_layers = (hypernetwork.layers if hypernetwork is not None else {}).get(context_k.shape[2], None)
    if hypernetwork_layers is None:
        return context_k, context_v
    context_k = hypernetwork_layers[0](context_k.float())
    context_v = hypernetwork_layers[1](context_v.float())
    return context_k, context_v


def apply_hypernetworks(hypernetworks, context):
    context_k = context
    context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v)
    return context_k, context_v


class HyperContext(torch.nn.Module):
    """Put in front of a diffusers Attention's to_k (part 0) or to_v (part 1): that projection then
    sees the context A1111's hijacked CrossAttention.forward hands it (to_k and to_v are only ever
    called on the context, so this is apply_hypernetworks exactly)."""

    def __init__(self, hypernetworks, part, proj):
        super().__init__()
        self.hypernetworks, self.part, self.proj = hypernetworks, part, proj

    def forward(self, context):
        return self.proj(apply_hypernetworks(self.hypernetworks, context)[self.part])


def hook_unet(unet, hypernetworks):
    """Every attention of a diffusers U-Net (attn1: context = x, attn2: the text) with the hypernetworks."""
    from diffusers.models.attention_processor import Attention
    for m in unet.modules():
        if isinstance(m, Attention):
            m.to_k = HyperContext(hypernetworks, 0, m.to_k)
            m.to_v = HyperContext(hypernetworks, 1, m.to_v)
    return unet
