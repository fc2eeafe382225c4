"""Unlabelled offline scenes for pretraining the default backbone (never a downstream task).

Each scene is a 64x64 RGB image: a background (a random crop of a photo that ships with
scikit-image, or a smooth colour gradient) with 1-5 Fashion-MNIST items pasted at random
positions, sizes and colours. Objects land anywhere on the canvas, so a backbone that has to
describe these scenes token by token learns *what is where*; the tiny backbone's Fashion-MNIST
classification pretraining, with shift/flip augmentation, learned to ignore position instead.

None of the photos is used by a downstream task (``textures`` and ``modality`` crop other
scikit-image files; ``faces`` uses the LFW subset), and no label is used: the scenes are only
inputs for distillation (``pretrain_dino.py``).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

SCENE = 64
# scikit-image photos that load offline and that no downstream task uses
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "page", "rocket", "text",
          "clock", "colorwheel", "stereo_motorcycle")


def _photos() -> List[np.ndarray]:
    """The background photos as (H, W, 3) uint8."""
    import skimage.data as skd
    out = []
    for name in PHOTOS:
        img = getattr(skd, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle -> (left, right, disp)
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return out


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) float -> (C, size, size), antialiased bilinear."""
    return F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _background(rng: np.random.Generator, photos: List[np.ndarray]) -> torch.Tensor:
    """A (3, 64, 64) float background in [0, 1]: a photo crop (60%) or a colour gradient."""
    if rng.random() < 0.6:
        img = photos[rng.integers(len(photos))]
        H, W = img.shape[:2]
        s = int(rng.integers(48, min(H, W) + 1))
        y, x = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
        crop = torch.from_numpy(img[y:y + s, x:x + s]).permute(2, 0, 1).float() / 255  # (3, s, s)
        bg = _resize(crop, SCENE)
        if rng.random() < 0.5:
            bg = bg.flip(-1)
        return bg * float(rng.uniform(0.4, 1.0))
    a, b = torch.from_numpy(rng.random((2, 3, 1, 1))).float()
    ramp = torch.linspace(0, 1, SCENE)
    ramp = ramp[None, :, None] if rng.random() < 0.5 else ramp[None, None, :]  # vertical or horizontal
    noise = torch.from_numpy(rng.random((3, SCENE, SCENE))).float() * 0.1
    return (a + (b - a) * ramp) * 0.8 + noise


def scenes(n: int, seed: int, items: np.ndarray) -> np.ndarray:
    """``n`` scenes, (n, 64, 64, 3) uint8, from Fashion-MNIST ``items`` (N, 28, 28) uint8."""
    rng = np.random.default_rng([seed, 2026])
    photos = _photos()
    out = np.empty((n, SCENE, SCENE, 3), dtype=np.uint8)
    for i in range(n):
        img = _background(rng, photos)                                   # (3, 64, 64)
        for _ in range(int(rng.integers(1, 6))):
            s = int(rng.integers(12, 37))                                # item size in px
            item = torch.from_numpy(items[rng.integers(len(items))]).float()[None] / 255  # (1, 28, 28)
            alpha = _resize(item, s).clamp(0, 1)                         # (1, s, s)
            if rng.random() < 0.5:
                alpha = alpha.flip(-1)
            colour = torch.from_numpy(rng.uniform(0.2, 1.0, (3, 1, 1))).float()
            y, x = (int(v) for v in rng.integers(0, SCENE - s + 1, size=2))
            patch = img[:, y:y + s, x:x + s]
            img[:, y:y + s, x:x + s] = patch * (1 - alpha) + colour * alpha
        out[i] = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return out


def to_input(images: np.ndarray, size: int, mean: Tuple[float, ...], std: Tuple[float, ...]) -> torch.Tensor:
    """(B, 64, 64, 3) uint8 -> (B, 3, size, size) normalised floats."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255                # (B, 3, 64, 64)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=size < SCENE, align_corners=False)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
