"""``load_model``: the inverse of ``make_model`` for a prompt file (``model/prompt_file.py``)."""
from __future__ import annotations

import json

import torch
from torch import nn

from ..backbones.load import backbone_name, fingerprint
from ..config import PromptConfig
from ..errors import ConfigError, PromptFileError
from ..model.prompt_file import meta_field, read_prompt_file, trained_state
from ..model.prompted import PromptedViT
from .factory import make_model


def load_model(path, vit: nn.Module, *, check_fingerprint: bool = True) -> nn.Module:
    """Rebuild the model saved in ``path`` on the backbone ``vit`` and load its trained tensors."""
    state, meta = read_prompt_file(path)
    depth = meta_field(path, meta, "backbone_depth", int)
    dim = meta_field(path, meta, "backbone_dim", int)
    num_classes = meta_field(path, meta, "num_classes", lambda v: None if v == "None" else int(v))
    cfg_dict = meta_field(path, meta, "prompt_config", json.loads)
    kwargs = meta_field(path, {"method_kwargs": "{}", **meta}, "method_kwargs", json.loads)
    for name in ("method", "backbone_name", "backbone_fingerprint"):
        meta_field(path, meta, name, str)
    if (len(vit.blocks), vit.embed_dim) != (depth, dim):
        raise PromptFileError(
            f"{str(path)!r} was trained on {meta['backbone_name']!r} (depth {depth}, d={dim}); this backbone "
            f"{backbone_name(vit)!r} has depth {len(vit.blocks)}, d={vit.embed_dim}. Load it onto "
            f"vx.load_backbone({meta['backbone_name']!r})")
    if not isinstance(cfg_dict, dict) or not isinstance(kwargs, dict):
        raise PromptFileError(f"{str(path)!r} has broken metadata: 'prompt_config' and 'method_kwargs' "
                              f"must be JSON objects")
    try:
        cfg = PromptConfig.from_dict(cfg_dict)
        build = cfg.replace(init="random") if cfg.init == "cls" else cfg  # the file holds the prompts
        if meta["method"] == "vpt":  # a PromptedViT built directly rather than by make_model
            model = PromptedViT(vit, build, num_classes)
        else:
            model = make_model(meta["method"], vit, num_classes, prompt=build, **kwargs)
        model.cfg = cfg
    except (ConfigError, TypeError) as e:
        raise PromptFileError(f"{str(path)!r} has metadata this version cannot rebuild: {e}") from None
    if check_fingerprint:
        vit_keys = frozenset(k[len("vit."):] for k in state if k.startswith("vit."))
        fp = fingerprint(model.vit, exclude=vit_keys)
        if fp != meta["backbone_fingerprint"]:
            raise PromptFileError(
                f"{str(path)!r} was trained on a backbone with other weights (fingerprint "
                f"{meta['backbone_fingerprint'][:12]}, this one {fp[:12]}; saved name "
                f"{meta['backbone_name']!r}). Load the same backbone, or pass check_fingerprint=False")
    own = dict(model.named_parameters())
    unknown = [k for k in state if k not in own]
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unknown or bad:
        k = (unknown or bad)[0]
        raise PromptFileError(f"{str(path)!r} does not fit the rebuilt model: tensor {k!r} "
                              + ("is unknown" if unknown else f"has shape {tuple(state[k].shape)} in the "
                                 f"file but {tuple(own[k].shape)} in the model"))
    missing = [k for k in trained_state(model) if k not in state]
    if missing:  # would otherwise stay at its random initial value, silently
        raise PromptFileError(f"{str(path)!r} lacks tensor {missing[0]!r} that method {meta['method']!r} "
                              f"trains ({len(missing)} missing); the file is incomplete")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    return model.eval()
