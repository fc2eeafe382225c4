"""Prompt files: what a method trained, in safetensors (never pickle), tied to its backbone.

A file holds only the trained tensors (prompts, head, biases, adapters, ...) plus metadata: the
method and its options, the PromptConfig, num_classes, the backbone's name and a fingerprint of its
frozen weights. Loading onto another backbone fails with a clear error; nothing in a file can run
code. Writes are atomic (``backbones.weights.atomic_save``), so a crash mid-write keeps the old file.
``read_for`` and ``load_trained`` check a file against a backbone and a rebuilt model;
``PromptedViT.load_prompts`` rebuilds files of a plain ``PromptedViT``, ``vx.load_model``
(``methods/load.py``) those of any method.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..backbones.load import backbone_name, fingerprint
from ..backbones.weights import atomic_save
from ..config import PromptConfig
from ..errors import ConfigError, MissingFileError, PromptFileError

FORMAT = "vpt_explore.prompts/1"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ and torch's zip container


def trained_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every tensor the method owns: all parameters outside the backbone, plus trainable ones in it."""
    state = {}
    for k, p in model.named_parameters():
        if not k.startswith("vit.") or p.requires_grad:
            state[k] = p.detach().cpu().contiguous()
    return state


def _metadata(model: nn.Module, state: Dict[str, torch.Tensor], extra: Optional[dict]) -> Dict[str, str]:
    vit = model.vit
    vit_keys = frozenset(k[len("vit."):] for k in state if k.startswith("vit."))
    meta = {
        "format": FORMAT,
        "method": getattr(model, "method", "vpt"),
        "method_kwargs": json.dumps(getattr(model, "method_kwargs", {})),
        "prompt_config": json.dumps(model.cfg.to_dict()),
        "num_classes": str(model.num_classes),
        "backbone_name": backbone_name(vit),
        "backbone_fingerprint": fingerprint(vit, exclude=vit_keys),
        "backbone_depth": str(len(vit.blocks)),
        "backbone_dim": str(vit.embed_dim),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def save_prompts(model: nn.Module, path, extra: Optional[dict] = None) -> Path:
    """Save what ``model`` trained to ``path`` (safetensors); returns the path."""
    state = trained_state(model)
    return atomic_save(state, path, _metadata(model, state, extra))


save_checkpoint = save_prompts


def read_prompt_file(path) -> tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and metadata of a prompt file, refusing anything that is not a valid one."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"prompt file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header ("{"); its first
    # byte can be 0x80 like a pickle's, so only a file that is not safetensors-shaped is a pickle
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    safetensors_shaped = head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8
    if not safetensors_shaped and head.startswith(_PICKLE_MAGIC):
        raise PromptFileError(f"{str(path)!r} looks like a pickle / torch.save file; prompt files are "
                              f"safetensors only (pickles can run code, so it was not opened)")
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise PromptFileError(f"{str(path)!r} is not a valid safetensors prompt file (truncated or "
                              f"corrupted?): {type(e).__name__}: {e}") from None
    if meta.get("format") != FORMAT:
        raise PromptFileError(f"{str(path)!r} is a safetensors file but not a vpt_explore prompt file "
                              f"(format={meta.get('format')!r}, expected {FORMAT!r})")
    return state, meta


def meta_field(path, meta: Dict[str, str], name: str, parse):
    """``parse(meta[name])``, or a PromptFileError naming the broken field (metadata is editable text)."""
    try:
        return parse(meta[name])
    except (KeyError, ValueError, TypeError) as e:
        raise PromptFileError(f"{str(path)!r} has broken metadata: field {name!r} "
                              f"({type(e).__name__}: {e}); re-save the model with save_prompts") from None


def read_for(path, vit: nn.Module) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], PromptConfig,
                                            Optional[int], dict]:
    """Read a prompt file meant for ``vit``: (tensors, metadata, its PromptConfig, num_classes,
    method kwargs), refusing broken metadata and a backbone of another depth or width."""
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
    except (ConfigError, TypeError) as e:
        raise PromptFileError(f"{str(path)!r} has metadata this version cannot rebuild: {e}") from None
    return state, meta, cfg, num_classes, kwargs


def load_trained(model: nn.Module, state: Dict[str, torch.Tensor], meta: Dict[str, str], path,
                 check_fingerprint: bool = True) -> nn.Module:
    """Copy a file's tensors into ``model`` (rebuilt from its metadata) after checking that the frozen
    backbone has the saved fingerprint and that the tensors are exactly the ones the model trains;
    returns the model in eval mode."""
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
