"""VPT on ConvNets (paper Sec. 4.2, "VPT on ConvNets"): learnable pixels padded around the image.

A ConvNet has no tokens to prepend, so the paper's prompt for ResNet-50 and ConvNeXt-B is a frame
of learned pixels of width p **around** the input: the backbone sees a (H + 2p) x (W + 2p) image
whose inside is the original. (Bahng et al.'s pad prompter, ``pixel_prompts.PadPrompter``, instead
adds its frame *onto* the image's own border, keeping H x W.) Parameters: ``C ((H+2p)(W+2p) - HW)``.

What is exact, and what is not:

* ``length=0`` is the identity: the logits equal the frozen backbone's.
* A frame of zeros is *not* a no-op: the map grows, so later layers (biases, normalisation, global
  pooling) see extra border positions. What is exact is the first convolution: with stride s,
  padding q and p a multiple of s, a zero frame is the padding the convolution would add itself,
  so ``conv(pad_0(x))`` cropped by p/s rows and columns on each side equals ``conv(x)``
  (``first_conv_crop`` checks it).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .pixel_prompts import PixelPrompter, framed
from .prompt_init import xavier_uniform_bound


def first_conv(model: nn.Module) -> Optional[nn.Conv2d]:
    """The backbone's first ``nn.Conv2d`` in module order (ResNet ``conv1``, ConvNeXt ``stem.0``)."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


class ConvPadPrompter(PixelPrompter):
    """Learned pixels of width p around the image: (B, C, H, W) -> (B, C, H + 2p, W + 2p).

    Args:
        length: the frame width p.
        image_size: (H, W) of the images it receives.
        channels: C.
        bound: values start uniform in (-bound, bound); ``None``: the Xavier bound of the first
            convolution (the paper's prompt init, Sec. 4.1, applied to the stem), 1.0 without one.
        generator: seeds the initial values.
        init: ``"random"`` (uniform, as above) or ``"zeros"`` (the zero frame of ``first_conv_crop``).
    """

    def __init__(self, length: int, image_size: Tuple[int, int], channels: int = 3, bound: Optional[float] = None,
                 generator: Optional[torch.Generator] = None, init: str = "random"):
        super().__init__(length, image_size, channels)
        H, W = self.image_size
        p, C = length, channels
        v = 1.0 if bound is None else bound
        shapes = {"pad_up": (C, p, W + 2 * p), "pad_down": (C, p, W + 2 * p), "pad_left": (C, H, p),
                  "pad_right": (C, H, p)}
        for name, shape in shapes.items():
            values = torch.zeros(shape) if init == "zeros" else (torch.rand(shape, generator=generator) * 2 - 1) * v
            setattr(self, name, nn.Parameter(values))

    @staticmethod
    def stem_bound(conv: Optional[nn.Conv2d]) -> float:
        """sqrt(6 / (C k_h k_w + out)): Xavier uniform of the stem convolution (1.0 without one)."""
        if conv is None:
            return 1.0
        kh, kw = conv.kernel_size
        return xavier_uniform_bound(conv.in_channels * kh * kw, conv.out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check(images)
        if not self.length:
            return images
        return framed(images, self.pad_up, self.pad_down, self.pad_left, self.pad_right)  # (B, C, H+2p, W+2p)


def conv_pad_params(length: int, image_size: Tuple[int, int], channels: int = 3) -> int:
    """``C ((H + 2p)(W + 2p) - H W)``: parameters of the ConvNet pad prompt."""
    H, W = image_size
    return channels * ((H + 2 * length) * (W + 2 * length) - H * W)


def first_conv_crop(model: nn.Module, images: torch.Tensor, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(conv(x), conv(zero frame around x) cropped by p/s): equal when p is a multiple of the stride s.

    Raises:
        ConfigError: the backbone has no convolution, or ``length`` is not a multiple of its stride.
    """
    conv = first_conv(model)
    if conv is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d: the first-convolution check needs a ConvNet")
    s = conv.stride[0]
    if length % s or conv.stride[0] != conv.stride[1]:
        raise ConfigError(f"length={length} must be a multiple of the first convolution's stride {conv.stride} "
                          f"for the zero frame to equal its own padding")
    k = length // s
    zero = ConvPadPrompter(length, tuple(images.shape[-2:]), images.shape[1], init="zeros")
    with torch.no_grad():
        padded = conv(zero(images))                                         # (B, out, h + 2k, w + 2k)
        plain = conv(images)                                                # (B, out, h, w)
    return plain, padded[..., k:padded.shape[-2] - k, k:padded.shape[-1] - k]
