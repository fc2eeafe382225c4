"""Self-supervised ViT-B/16 backbones (paper Sec. 4.2, Table 6 backbones): MAE and MoCo v3.

* ``"vit_base_patch16_224.mae"`` (also ``vit_large_patch16_224.mae``, ``vit_huge_patch14_224.mae``):
  timm's MAE weights. timm's pretrained cfg for them sets ``num_classes=0`` and nothing else, so a
  plain ``create_model`` pools the [CLS] token. MAE's encoder was never trained to put anything in
  [CLS] (its loss reads only patch tokens), and MAE's own linear probe / fine-tuning average the
  patch tokens. We build them with ``global_pool="avg", fc_norm=False``: timm's average of the patch
  tokens ([CLS] excluded), after the checkpoint's own final ``norm`` (``fc_norm=True`` would put a
  fresh, untrained LayerNorm there instead). ``make_model`` then defaults to ``pool="image"``, which
  averages patch tokens only, never prompts.
* ``"mocov3-vit-b16"``: MoCo v3 is not in timm. Its encoder is timm's ``vit_base_patch16_224``
  ([CLS] pooling, ImageNet mean/std), so a local checkpoint loads after this key mapping:
  ``module.base_encoder.<timm key>`` -> ``<timm key>`` (the pretraining checkpoint's
  ``{"state_dict": ...}``), ``module.<timm key>`` -> ``<timm key>``; the momentum encoder
  (``module.momentum_encoder.*``), the predictor and the projection/classifier head (``head.*``)
  are dropped. It needs ``weights=``: there is no hub copy to download.

Local files: safetensors, or a weights-only torch file holding a state dict, optionally wrapped in
``{"state_dict": ...}`` (MoCo v3) or ``{"model": ...}`` (MAE). MAE keys are timm's already; the
decoder, ``mask_token`` and any ``head.*`` are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from ..errors import MissingFileError, PromptFileError
from .weights import read_state

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SelfSupervised:
    """How to build one self-supervised backbone with timm."""
    arch: str                      # the timm architecture (or arch.tag) to create
    timm_kwargs: Tuple[Tuple[str, object], ...]
    hub: bool                      # timm has the weights (else weights= is required)
    drop_prefixes: Tuple[str, ...]  # checkpoint keys that are not part of the encoder


_MAE = SelfSupervised("", (("global_pool", "avg"), ("fc_norm", False), ("num_classes", 0)), True,
                      ("decoder", "mask_token", "head."))
SELF_SUPERVISED: Dict[str, SelfSupervised] = {
    **{f"{arch}.mae": SelfSupervised(f"{arch}.mae", _MAE.timm_kwargs, True, _MAE.drop_prefixes)
       for arch in ("vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224")},
    "mocov3-vit-b16": SelfSupervised("vit_base_patch16_224", (("global_pool", "token"), ("num_classes", 0)),
                                     False, ("momentum_encoder.", "predictor.", "head.")),
}


def mocov3_keys(state: Dict[str, torch.Tensor], drop: Tuple[str, ...]) -> Dict[str, torch.Tensor]:
    """Map a MoCo v3 / MAE checkpoint's keys to timm's and drop what is not the encoder."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.base_encoder.", "module.", "base_encoder."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        if not k.startswith(drop):
            out[k] = v
    return out


def hub_args(name: str, **timm_kwargs) -> Tuple[str, dict]:
    """(timm name, create_model kwargs) for loading ``name`` from the hub (or timm's cache).

    Raises:
        MissingFileError: ``mocov3-vit-b16``: there is no hub copy, it needs ``weights=``.
    """
    spec = SELF_SUPERVISED[name]
    if not spec.hub:
        raise MissingFileError(f"{name!r} is not on the timm hub: pass weights='path/to/checkpoint' (a MoCo v3 "
                               f"checkpoint such as vit-b-300ep.pth.tar, or a timm-format state dict)")
    return spec.arch, {**dict(spec.timm_kwargs), **timm_kwargs}


def load_self_supervised(name: str, weights, **timm_kwargs) -> nn.Module:
    """``name``'s architecture with the encoder weights of the local file ``weights`` (keys mapped).

    Raises:
        MissingFileError: no such file.
        PromptFileError: the file is unreadable or does not fit (missing or unexpected keys).
    """
    import timm
    spec = SELF_SUPERVISED[name]
    state = mocov3_keys(read_state(weights), spec.drop_prefixes)  # before building: fail fast
    model = timm.create_model(spec.arch, pretrained=False, **{**dict(spec.timm_kwargs), **timm_kwargs})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PromptFileError(f"{str(weights)!r} does not fit {name!r} after the key mapping: missing "
                              f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    model.pretrained_cfg = dict(model.pretrained_cfg, mean=IMAGENET_MEAN, std=IMAGENET_STD, tag=name)
    return model
