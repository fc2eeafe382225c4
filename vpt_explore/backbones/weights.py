"""Weights on disk: read a backbone's .safetensors / .pth file, write any safetensors file atomically,
and digest a set of tensors (the one hash used for backbone fingerprints and caches)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Mapping

import torch
from torch import nn

from ..errors import ConfigError, MissingFileError, PromptFileError


def tensor_digest(state: Mapping[str, torch.Tensor], exclude: frozenset = frozenset()) -> str:
    """blake2b over names, shapes and float32 bytes of every tensor, in sorted name order, skipping ``exclude``."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(state):
        if k in exclude:
            continue
        v = state[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def atomic_write_json(obj, path) -> Path:
    """Write ``obj`` as JSON through a temporary file beside ``path`` and ``os.replace``: a crash or
    Ctrl-C mid-write keeps the old file (resumable reference runs and studies rely on it)."""
    import json
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
    return path


def atomic_save(state: Mapping[str, torch.Tensor], path, metadata: Dict[str, str]) -> Path:
    """Write a safetensors file via a temporary file in the same folder, fsync and ``os.replace``.

    A crash mid-write keeps the old file; the result is readable by all (mode 0644, like ``open``).
    """
    from safetensors.torch import save_file
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"path={str(path)!r} is a folder; give a file name such as "
                          f"{str(path / 'prompts.safetensors')!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=dict(metadata))
        with open(tmp, "rb") as f:  # on disk before the rename, so a power cut cannot leave it empty
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache folder should stay readable
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_state(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a local ``.safetensors`` file, or a ``.pth``/``.bin`` read
    with ``weights_only=True`` (pickled code is refused), unwrapping ``{"state_dict"}``/``{"model"}``."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise PromptFileError(f"{str(path)!r} is not a readable safetensors file: {e}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise PromptFileError(f"{str(path)!r} could not be read as a weights-only torch file "
                                  f"(pickled code is refused): {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PromptFileError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict of tensors "
                              f"(name -> tensor)")
    return state


def load_weights_file(vit: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a local ``.safetensors`` (preferred) or ``.pth``/``.bin`` (weights_only) file into vit."""
    state = read_state(path)
    own = vit.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        hint = (f"; pass num_classes={state[k].shape[0]} to load_backbone (or load the head separately)"
                if k.startswith("head.") and len(mismatched) == sum(m.startswith("head.") for m in mismatched)
                else "; the file was made for another architecture")
        raise PromptFileError(f"{str(path)!r} does not fit this backbone: {k} has shape "
                              f"{tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model"
                              f"{hint}")
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise PromptFileError(f"{str(path)!r} does not fit this backbone: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return vit
