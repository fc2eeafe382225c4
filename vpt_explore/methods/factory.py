"""The paper's transfer methods (Table 1, Sec. 4.1 / App. A) behind one factory, ``make_model``.

Every method returns a ``PromptedViT`` (or a small subclass), so all share ``forward_features`` /
``forward_head`` / ``head`` / ``parameter_report`` / ``save_prompts``. Methods that change the
backbone (full, partial, bias, adapter, vpt+bias) work on a deep copy, so the backbone you pass in
stays frozen and can be shared by the prompt methods.

| method       | trains                                   | optimiser |
|--------------|------------------------------------------|-----------|
| full         | everything                               | AdamW     |
| linear       | a linear head                            | SGD       |
| partial-k    | the last k blocks (+ final norm) and head| AdamW     |
| mlp-k        | a k-layer MLP head                       | SGD       |
| sidetune     | a small side network blended with the frozen features, and head | SGD |
| bias         | every bias of the backbone (BitFit) and head | AdamW |
| adapter      | bottleneck adapters after each FFN (reduction r) and head | AdamW |
| vpt-shallow  | prompts at block 0 and head              | SGD       |
| vpt-deep     | prompts at every block and head          | SGD       |
| vpt+bias     | deep prompts, biases and head            | AdamW     |
| ensemble     | k prompt sets (seeds) on one backbone, averaged logits | SGD |
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..config import PromptConfig, _check_int
from ..errors import ConfigError, did_you_mean
from ..model.checks import check_backbone
from ..model.prompted import PromptedViT
from .registry import MethodSpec, method_names, parse_method

METHODS = method_names()  # the built-in methods; registered ones appear in registry.method_names()


def make_model(method: str, vit: nn.Module, num_classes: int, *, prompt: Optional[PromptConfig] = None,
               length: Optional[int] = None, reduction: int = 8, members: int = 5,
               seed: int = 0, **prompt_kw) -> PromptedViT:
    """Build one of the paper's transfer methods on ``vit``.

    Args:
        method: see ``METHODS``; ``partial-k`` / ``mlp-k`` take any k.
        vit: a timm VisionTransformer (copied for methods that change it).
        num_classes: classes of the downstream task.
        prompt: a PromptConfig for the vpt methods (its ``layers`` is set by the method name).
        length: shortcut for ``prompt.length``.
        reduction: adapter reduction factor r (paper: 8, 64, 256).
        members: prompt sets in the ensemble.
        seed: seeds every new tensor (prompts, head, adapters, side network), so the same seed
            builds the same model whatever ran before.
        **prompt_kw: other PromptConfig fields (location, share, pool, ...).

    Returns:
        A PromptedViT with ``.method`` and ``.method_kwargs`` set.
    """
    spec, k = parse_method(method)
    check_backbone(vit)
    if prompt is not None and not isinstance(prompt, PromptConfig):
        raise ConfigError(f"prompt={prompt!r} must be a vx.PromptConfig (or None)")
    _check_int("reduction", reduction, 1)
    _check_int("members", members, 1)
    _check_int("seed", seed)
    unknown = [kw for kw in prompt_kw if kw not in PromptConfig.__dataclass_fields__]
    if unknown:
        fields = ["prompt", "reduction", "members", "seed", *PromptConfig.__dataclass_fields__]
        raise ConfigError(f"make_model got an unknown option {unknown[0]!r}; allowed: {fields}"
                          f"{did_you_mean(unknown[0], fields)}")
    k_max = spec.k_max or len(vit.blocks)
    if k is not None and not 1 <= k <= k_max:
        raise ConfigError(f"method={method!r}: k={k} must be in 1..{k_max}")
    cfg = method_prompt_config(spec, prompt, length, prompt_kw)
    options = {"reduction": reduction, "members": members, "seed": seed}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = copy.deepcopy(vit) if spec.tunes_backbone else vit
        model = spec.build(backbone, num_classes, cfg, k, options)
        if hasattr(backbone, "head"):
            backbone.head.requires_grad_(False)  # the backbone's own head is never used
    model.method = method
    model.method_kwargs = {name: options[name] for name in spec.kwargs}
    return model


def method_prompt_config(spec: MethodSpec, prompt: Optional[PromptConfig], length: Optional[int],
                         prompt_kw: dict) -> PromptConfig:
    """The PromptConfig a method builds with: its ``layers`` rule applied to the user's settings.

    Methods without prompts ignore prompt settings (length 0).
    """
    if not spec.has_prompts:
        return PromptConfig(length=0)
    base = prompt or PromptConfig(dropout=spec.dropout)
    prompt_kw = dict(prompt_kw)
    layers = prompt_kw.pop("layers", None if prompt is None else prompt.layers)
    if spec.layers == "shallow":
        if layers not in (None, "shallow", (0,)):
            raise ConfigError(f"layers={layers!r} contradicts method={spec.name!r}; use method='vpt-deep' "
                              f"with layers={layers!r}")
        layers = "shallow"
    elif layers in (None, "shallow"):
        layers = "deep"  # vpt-deep / vpt+bias / ensemble default to every block; a tuple is kept
    changes = dict(prompt_kw, layers=layers)
    if length is not None:
        changes["length"] = length
    return base.replace(**changes)
