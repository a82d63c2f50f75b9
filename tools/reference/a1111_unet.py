"""The tiny diffusers U-Net run as A1111 v1.10.1 runs LDM's U-Net at sizes that are not
multiples of 64 pixels (`modules/sd_hijack_unet.py`).

A1111 replaces `torch` in LDM's `openaimodel` by `TorchHijackForUnet`, whose `cat` resizes the
first tensor to the second's size with nearest interpolation when they differ; LDM's `Upsample`
always upsamples x2 before its convolution. Diffusers instead passes `upsample_size` (the skip's
size) to `Upsample2D` when the latent is not a multiple of 8. `use(True)` makes diffusers'
`Upsample2D.forward` ignore `output_size` (x2 always) and gives the up blocks' module the hijack
object as `torch` (their `torch.cat([hidden_states, res_hidden_states])`); at multiples of 8
latents nothing changes. `use(False)` restores diffusers' way.
"""

import torch
from diffusers.models import upsampling
from diffusers.models.unets import unet_2d_blocks


class TorchHijackForUnet:
    """A1111 v1.10.1 modules/sd_hijack_unet.py, verbatim in behaviour."""

    def __getattr__(self, item):
        if item == 'cat':
            return self.cat
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(item)

    def cat(self, tensors, *args, **kwargs):
        if len(tensors) == 2:
            a, b = tensors
            if a.shape[-2:] != b.shape[-2:]:
                a = torch.nn.functional.interpolate(a, b.shape[-2:], mode="nearest")
            tensors = (a, b)
        return torch.cat(tensors, *args, **kwargs)


_upsample_forward = upsampling.Upsample2D.forward


def _x2(self, hidden_states, output_size=None, *args, **kwargs):
    return _upsample_forward(self, hidden_states, None, *args, **kwargs)


def use(a1111=True):
    unet_2d_blocks.torch = TorchHijackForUnet() if a1111 else torch
    upsampling.Upsample2D.forward = _x2 if a1111 else _upsample_forward
