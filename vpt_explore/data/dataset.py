"""What a loaded split is (``TaskDataset``) and how images become backbone inputs (resize, normalise).

The data layer never needs a model: ``data_config`` reads the input size and mean/std from whatever
timm ViT it is given (its ``patch_embed.img_size`` and ``pretrained_cfg``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError

ImageSize = Union[int, Tuple[int, int]]


def data_config(vit: nn.Module) -> dict:
    """Input size, mean and std the backbone expects.

    Mean and std come from ``timm.data.resolve_data_config`` on the model (its ``pretrained_cfg``,
    ImageNet's values when it has none); the input size is the one the model was built at
    (``patch_embed.img_size``), which may differ from its pretraining size.
    """
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=vit)
    H, W = vit.patch_embed.img_size
    return {"input_size": (3, H, W), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``list_tasks()``: what a task is, how big its splits are, where it comes from."""
    name: str
    group: str
    num_classes: int
    sizes: Dict[str, int] = field(hash=False)
    source: str
    offline: bool
    description: str


class TaskDataset(Dataset):
    """A split held in memory: ``images`` float32 (N, 3, H, W) ready for the backbone, ``labels`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, split: str,
                 classes: Sequence[str], info: TaskInfo) -> None:
        self.images, self.labels = images, labels
        self.name, self.split, self.classes, self.info = name, split, list(classes), info

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __repr__(self) -> str:
        return (f"TaskDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, image={tuple(self.images.shape[1:])})")


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """Target resolution and normalisation: ``(x / 255 - mean) / std`` per channel."""
    size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


def _triple(name: str, value, positive: bool) -> Tuple[float, float, float]:
    vals = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
    ok = len(vals) == 3 and all(isinstance(v, (int, float)) and np.isfinite(v) for v in vals)
    if not ok or (positive and min(vals) <= 0):
        need = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{name}={value!r} must be one number or three {need} (one per RGB channel)")
    return tuple(float(v) for v in vals)


def resolve_preprocess(backbone=None, image_size: Optional[ImageSize] = None, mean=None,
                       std=None) -> Preprocess:
    """Resolution and mean/std from the backbone (``data_config``); explicit args win.

    Without a backbone: ``image_size`` 32 and mean = std = 0.5 (the tiny backbone's setting).
    """
    size, m, s = (32, 32), 0.5, 0.5
    if isinstance(backbone, str):
        raise ConfigError(f"backbone={backbone!r} must be a loaded model, not a name: pass "
                          f"backbone=vx.load_backbone({backbone!r})")
    if backbone is not None and not hasattr(backbone, "patch_embed") and hasattr(backbone, "vit"):
        backbone = backbone.vit  # a PromptedViT / make_model result: use its backbone
    if backbone is not None and not hasattr(backbone, "patch_embed"):
        raise ConfigError(f"backbone={type(backbone).__name__} is not a timm ViT (no patch_embed); pass "
                          f"the model from vx.load_backbone(...), or image_size=, mean=, std=")
    if backbone is not None:
        cfg = data_config(backbone)
        size, m, s = tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"]
    if image_size is not None:
        pair = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
            raise ConfigError(f"image_size={image_size!r} must be a positive integer or (height, width)")
        size = pair
    return Preprocess(size, _triple("mean", m if mean is None else mean, False),
                      _triple("std", s if std is None else std, True))


def _normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (B, C, h, w) with C in {1, 3} -> resized, normalised float32 (B, 3, H, W)."""
    if tuple(x.shape[-2:]) != pre.size:
        x = F.interpolate(x, size=pre.size, mode="bilinear", antialias=True)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std  # grey (B, 1, H, W) broadcasts to (B, 3, H, W)


def _to_nchw(img: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> (N, C, H, W) with C in {1, 3}."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.uint8))
    if t.ndim == 3:
        return t[:, None]  # (N, 1, H, W)
    return t[..., :3].permute(0, 3, 1, 2).contiguous()  # (N, C, H, W); drops alpha


def prepare_images(images: Union[np.ndarray, List[np.ndarray]], pre: Preprocess,
                   chunk: int = 256) -> torch.Tensor:
    """Resize (bilinear, antialiased, from uint8) and normalise images for a backbone.

    Args:
        images: uint8 array (N, H, W[, C]), or a list of (H, W[, C]) arrays of any sizes.
        pre: target size and mean/std.
        chunk: images resized at a time (bounds the temporary memory).

    Returns:
        float32 tensor (N, 3, H, W).
    """
    out = torch.empty(len(images), 3, *pre.size)
    if isinstance(images, np.ndarray):
        for i in range(0, len(images), chunk):
            out[i:i + chunk] = _normalise(_to_nchw(images[i:i + chunk]), pre)
    else:
        for i, img in enumerate(images):
            out[i] = _normalise(_to_nchw(np.asarray(img)[None]), pre)[0]
    return out
