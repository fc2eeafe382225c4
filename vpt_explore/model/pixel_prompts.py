"""Pixel-space prompters after Bahng et al. 2022, "Exploring Visual Prompts for Adapting Large-Scale
Models" (arXiv 2203.17274): a learned perturbation **added to the input image**, so they work on any
frozen backbone (ViT, Swin, ConvNet). Sizes follow their Sec. 3 (the prompter's shapes):

* ``PadPrompter``: a learned frame of width p around the image, added to the border pixels;
  the image keeps its size (``x + frame``), the inside is untouched.
  Parameters ``2 C p W + 2 C (H - 2p) p`` (69,840 for 224 px, p = 30).
* ``FixedPatchPrompter``: a learned p x p patch added at the top-left corner: ``C p^2``.
* ``RandomPatchPrompter``: the same patch, added at a random place of each image in training mode.
  Places come from the prompter's own ``torch.Generator``, seeded at construction, so a run is
  reproducible and does not disturb the global RNG. In eval mode the patch sits at
  ``eval_at`` (default the top-left corner, (0, 0)), so evaluation is deterministic. (Bahng et al.
  draw one place per batch, also at test time; we draw one per image and fix it at eval.)

How they differ from VPT (Jia et al. Sec. 3.2, and ``PromptConfig(location="prepend-pixel")``):
these prompts *perturb the pixels* the backbone sees; VPT's prompts are *extra tokens* (or, for
``prepend-pixel``, extra patches projected by the frozen patch embedding and prepended as tokens):
the image itself is never changed. ``init="random"``: standard normal values as in Bahng et al.;
a prompter whose values are all zero leaves the image, and so the logits, exactly unchanged.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError


def _check_size(kind: str, p: int, size: Tuple[int, int], limit: int) -> None:
    H, W = size
    if p * limit > min(H, W):
        most = min(H, W) // limit
        raise ConfigError(f"length={p} is too large for a {kind} on {H}x{W} images: allowed 0..{most}")


class PixelPrompter(nn.Module):
    """Base class: ``forward(images) -> images + prompt`` (B, C, H, W); ``length`` is p."""

    def __init__(self, length: int, image_size: Tuple[int, int], channels: int = 3):
        super().__init__()
        self.length, self.image_size, self.channels = length, tuple(image_size), channels

    def _param(self, shape, gen: Optional[torch.Generator], init: str) -> nn.Parameter:
        if init == "zeros":
            return nn.Parameter(torch.zeros(shape))
        return nn.Parameter(torch.randn(shape, generator=gen))  # Bahng et al.: torch.randn

    def check(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != self.image_size or images.shape[1] != self.channels:
            raise ConfigError(f"images are {tuple(images.shape[1:])}; this prompter was built for "
                              f"({self.channels}, {self.image_size[0]}, {self.image_size[1]}): pass "
                              f"image_size= to make_model, or load the task at that size")

    def extra_repr(self) -> str:
        return f"p={self.length}, image={self.image_size}"


class PadPrompter(PixelPrompter):
    """Bahng et al.'s padding prompter: a learned frame of width p added to the border pixels."""

    def __init__(self, length: int, image_size: Tuple[int, int], channels: int = 3,
                 generator: Optional[torch.Generator] = None, init: str = "random"):
        super().__init__(length, image_size, channels)
        _check_size("pad prompter", length, self.image_size, 2)
        H, W = self.image_size
        p, C = length, channels
        self.pad_up = self._param((C, p, W), generator, init)             # (C, p, W)
        self.pad_down = self._param((C, p, W), generator, init)
        self.pad_left = self._param((C, H - 2 * p, p), generator, init)   # (C, H-2p, p)
        self.pad_right = self._param((C, H - 2 * p, p), generator, init)

    def frame(self) -> torch.Tensor:
        """The (C, H, W) prompt: the learned frame, zeros inside."""
        p = self.length
        inside = self.pad_up.new_zeros(self.channels, self.image_size[0] - 2 * p, self.image_size[1] - 2 * p)
        return framed(inside, self.pad_up, self.pad_down, self.pad_left, self.pad_right)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check(images)
        return images + self.frame() if self.length else images


class FixedPatchPrompter(PixelPrompter):
    """Bahng et al.'s fixed-patch prompter: a learned p x p patch added at the top-left corner."""

    def __init__(self, length: int, image_size: Tuple[int, int], channels: int = 3,
                 generator: Optional[torch.Generator] = None, init: str = "random"):
        super().__init__(length, image_size, channels)
        _check_size("patch prompter", length, self.image_size, 1)
        self.patch = self._param((channels, length, length), generator, init)   # (C, p, p)

    def place(self, B: int, device) -> torch.Tensor:
        """Top-left corners (B, 2) of the patch in each image: (0, 0) here."""
        return torch.zeros(B, 2, dtype=torch.long, device=device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check(images)
        if not self.length:
            return images
        return images + self.canvas(self.place(images.shape[0], images.device))

    def canvas(self, corners: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W): the patch at ``corners`` (B, 2) of each image, zeros elsewhere."""
        H, W = self.image_size
        p, dev = self.length, corners.device
        rows = torch.arange(H, device=dev)[None, :] - corners[:, :1]          # (B, H): row within patch
        cols = torch.arange(W, device=dev)[None, :] - corners[:, 1:]          # (B, W)
        inside = ((rows >= 0) & (rows < p))[:, :, None] & ((cols >= 0) & (cols < p))[:, None, :]  # (B, H, W)
        r = rows.clamp(0, p - 1)[:, :, None].expand(-1, -1, W)                # (B, H, W)
        c = cols.clamp(0, p - 1)[:, None, :].expand(-1, H, -1)
        values = self.patch[:, r, c]                                           # (C, B, H, W)
        return values.permute(1, 0, 2, 3) * inside[:, None]                   # (B, C, H, W)


class RandomPatchPrompter(FixedPatchPrompter):
    """Bahng et al.'s random-patch prompter: the p x p patch at a random place of each image while
    training (a seeded generator of its own), at ``eval_at`` in eval mode."""

    def __init__(self, length: int, image_size: Tuple[int, int], channels: int = 3,
                 generator: Optional[torch.Generator] = None, init: str = "random", seed: int = 0,
                 eval_at: Tuple[int, int] = (0, 0)):
        super().__init__(length, image_size, channels, generator, init)
        H, W = self.image_size
        if not (0 <= eval_at[0] <= H - length and 0 <= eval_at[1] <= W - length):
            raise ConfigError(f"eval_at={eval_at!r} puts the {length}x{length} patch outside a {H}x{W} "
                              f"image; allowed rows 0..{H - length}, columns 0..{W - length}")
        self.eval_at = tuple(eval_at)
        self.places = torch.Generator().manual_seed(seed)   # its own RNG: reproducible, global RNG untouched

    def place(self, B: int, device) -> torch.Tensor:
        if not self.training:
            return torch.tensor([self.eval_at] * B, dtype=torch.long, device=device)
        H, W = self.image_size
        top = torch.randint(0, H - self.length + 1, (B, 1), generator=self.places)
        left = torch.randint(0, W - self.length + 1, (B, 1), generator=self.places)
        return torch.cat([top, left], dim=1).to(device)                       # (B, 2)


def framed(inside: torch.Tensor, up: torch.Tensor, down: torch.Tensor, left: torch.Tensor,
           right: torch.Tensor) -> torch.Tensor:
    """``inside`` (..., C, h, w) inside a frame: left/right strips (C, h, p) beside it, then the
    up/down strips (C, p, w + 2p) above and below; leading batch dimensions are broadcast."""
    lead = inside.shape[:-3]
    grow = lambda t: t.expand(*lead, *t.shape)                             # noqa: E731
    middle = torch.cat([grow(left), inside, grow(right)], dim=-1)          # (..., C, h, w+2p)
    return torch.cat([grow(up), middle, grow(down)], dim=-2)               # (..., C, h+2p, w+2p)


def pad_prompter_params(length: int, image_size: Tuple[int, int], channels: int = 3) -> int:
    """``2 C p W + 2 C (H - 2p) p``: the pad prompter's parameters (69,840 at 224 px, p = 30)."""
    H, W = image_size
    return 2 * channels * length * W + 2 * channels * (H - 2 * length) * length
