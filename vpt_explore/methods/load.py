"""``load_model``: the inverse of ``make_model`` for a prompt file (``model/prompt_file.py``)."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError, PromptFileError
from ..model.prompt_file import load_trained, read_for
from ..model.prompted import PromptedViT
from .factory import make_model


def load_model(path, vit: nn.Module, *, check_fingerprint: bool = True) -> nn.Module:
    """Rebuild the model saved in ``path`` (any method) on the backbone ``vit`` and load its trained
    tensors; returns it in eval mode.

    Raises:
        PromptFileError: a file of another backbone (depth, width or fingerprint), broken metadata,
            a method this version does not know, or tensors that do not fit the rebuilt model.
    """
    state, meta, cfg, num_classes, kwargs = read_for(path, vit)
    try:
        build = cfg.replace(init="random") if cfg.init == "cls" else cfg  # the file holds the prompts
        if meta["method"] == "vpt":  # a PromptedViT built directly rather than by make_model
            model = PromptedViT(vit, build, num_classes)
        else:
            model = make_model(meta["method"], vit, num_classes, prompt=build, **kwargs)
        model.cfg = cfg
    except (ConfigError, TypeError) as e:
        raise PromptFileError(f"{str(path)!r} has metadata this version cannot rebuild: {e}") from None
    return load_trained(model, state, meta, path, check_fingerprint)
