"""Fail-fast checks for a PromptedViT: is the backbone a timm ViT, does the PromptConfig fit it,
and can it take this batch of images. Each raises with a message that says what to change."""
from __future__ import annotations

import torch
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError, DataError


def check_backbone(vit: nn.Module) -> None:
    """Refuse a backbone that lacks what PromptedViT reads of a timm ``VisionTransformer``."""
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens", "embed_dim")
    missing = [n for n in needed if not hasattr(vit, n)]
    if missing:
        raise ConfigError(
            f"backbone {type(vit).__name__} is not a timm VisionTransformer (missing {missing}); "
            f"build one with vx.load_backbone(...) or timm.create_model('vit_...')"
        )


def check_config_against_backbone(cfg: PromptConfig, vit: nn.Module) -> None:
    """Refuse a prompt setup this backbone cannot run (no [CLS], no conv patch embedding, ...)."""
    if cfg.pool == "cls" and getattr(vit, "cls_token", None) is None:
        raise ConfigError(
            "pool='cls' needs a [CLS] token, but this backbone has none (class_token=False); "
            "use pool='image'"
        )
    if cfg.learn_cls and getattr(vit, "cls_token", None) is None:
        raise ConfigError("learn_cls=True needs a backbone with a [CLS] token; this one has none")
    if cfg.location in ("prepend-pixel", "concat-channel"):
        if not isinstance(getattr(vit.patch_embed, "proj", None), nn.Conv2d):
            raise ConfigError(
                f"location={cfg.location!r} needs a convolutional patch embedding "
                f"(patch_embed.proj is {type(getattr(vit.patch_embed, 'proj', None)).__name__}); "
                f"use location='prepend' or 'add'"
            )
    num_patches = vit.patch_embed.num_patches
    if cfg.location == "add" and cfg.length not in (0, 1, num_patches):
        raise ConfigError(
            f"length={cfg.length} is not allowed with location='add': the prompt is added to the "
            f"{num_patches} patch embeddings, so length must be 1 (one shared vector) or "
            f"{num_patches} (one per patch)"
        )


def check_images(vit: nn.Module, images: torch.Tensor) -> None:
    """Fail fast, before any compute, on a batch the backbone cannot take."""
    pe = vit.patch_embed
    C = getattr(pe.proj, "in_channels", None)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if C is not None and images.shape[1] != C:
        raise DataError(f"images have {images.shape[1]} channels; this backbone expects {C} "
                        f"(shape (B, {C}, {pe.img_size[0]}, {pe.img_size[1]}))")
    strict = getattr(pe, "strict_img_size", True) and not getattr(pe, "dynamic_img_size", False)
    if strict and tuple(images.shape[-2:]) != tuple(pe.img_size):
        raise DataError(f"images are {images.shape[-2]}x{images.shape[-1]} pixels; this backbone "
                        f"expects {pe.img_size[0]}x{pe.img_size[1]} (resize, or load the task "
                        f"with this backbone so it matches)")
