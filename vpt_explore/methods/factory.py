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
| pad-prompt   | a learned frame of width p added onto the image (Bahng et al.) and head | SGD |
| fixed-patch  | a learned p x p patch added at the top-left corner (Bahng et al.) and head | SGD |
| random-patch | the same patch at a random place per image while training (Bahng et al.) and head | SGD |
| conv-pad     | learned pixels of width p around the image (VPT on ConvNets, Sec. 4.2) and head | SGD |

Beyond the plain ViT: ``vpt-shallow`` / ``vpt-deep`` also take a timm SwinTransformer (window
prompts, ``PromptedSwin``); ``linear`` and the pixel prompters take any frozen timm backbone (ViT,
Swin, ConvNet); ``conv-pad`` takes ConvNets. Other combinations raise ``ConfigError``.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..config import PromptConfig, _check_int
from ..errors import ConfigError, did_you_mean
from ..model.input_prompted import backbone_kind
from .registry import MethodSpec, method_names, methods_for, parse_method

METHODS = method_names()  # the built-in methods; registered ones appear in registry.method_names()


def make_model(method: str, vit: nn.Module, num_classes: int, *, prompt: Optional[PromptConfig] = None,
               length: Optional[int] = None, reduction: int = 8, members: int = 5,
               seed: int = 0, image_size=None, **prompt_kw) -> nn.Module:
    """Build one of the paper's transfer methods on ``vit``.

    Args:
        method: see ``METHODS``; ``partial-k`` / ``mlp-k`` take any k.
        vit: a timm VisionTransformer (copied for methods that change it); for ``linear``,
            ``vpt-shallow``/``vpt-deep`` and the input prompts also a SwinTransformer, and for
            ``linear``, the input prompts and ``conv-pad`` a timm ConvNet (ResNet, ConvNeXt).
        num_classes: classes of the downstream task.
        prompt: a PromptConfig for the vpt methods (its ``layers`` is set by the method name).
        length: shortcut for ``prompt.length``.
        reduction: adapter reduction factor r (paper: 8, 64, 256).
        members: prompt sets in the ensemble.
        image_size: (H, W) or an int: the image size an input prompter is built for (default:
            the backbone's input size; a ConvNet takes any size, so pass the task's).
        seed: seeds every new tensor (prompts, head, adapters, side network), so the same seed
            builds the same model whatever ran before.
        **prompt_kw: other PromptConfig fields (location, share, pool, ...).

    Returns:
        A PromptedViT (ViT), PromptedSwin (Swin prompts) or InputPromptedModel (input prompts,
        ConvNet probe), with ``.method`` and ``.method_kwargs`` set.

    Raises:
        ConfigError: an unknown method or option, or a method the backbone cannot run.
    """
    spec, k = parse_method(method)
    kind = backbone_kind(vit)
    check_kind(spec, method, kind, vit)
    if prompt is not None and not isinstance(prompt, PromptConfig):
        raise ConfigError(f"prompt={prompt!r} must be a vx.PromptConfig (or None)")
    _check_int("reduction", reduction, 1)
    _check_int("members", members, 1)
    _check_int("seed", seed)
    unknown = [kw for kw in prompt_kw if kw not in PromptConfig.__dataclass_fields__]
    if unknown:
        fields = ["prompt", "reduction", "members", "seed", "image_size", *PromptConfig.__dataclass_fields__]
        raise ConfigError(f"make_model got an unknown option {unknown[0]!r}; allowed: {fields}"
                          f"{did_you_mean(unknown[0], fields)}")
    if k is not None and not 1 <= k <= (spec.k_max or len(vit.blocks)):
        raise ConfigError(f"method={method!r}: k={k} must be in 1..{spec.k_max or len(vit.blocks)}")
    if image_size is not None:
        image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(image_size) != 2 or not all(isinstance(v, int) and v >= 1 for v in image_size):
            raise ConfigError(f"image_size={image_size!r} must be a positive integer or (height, width)")
    cfg = method_prompt_config(spec, prompt, length, prompt_kw, default_pool(vit, kind, prompt, prompt_kw))
    options = {"reduction": reduction, "members": members, "seed": seed, "image_size": image_size}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = copy.deepcopy(vit) if spec.tunes_backbone else vit
        model = spec.build(backbone, num_classes, cfg, k, options)
        if hasattr(backbone, "head"):
            backbone.head.requires_grad_(False)  # the backbone's own head is never used
    model.method = method
    model.method_kwargs = {name: options[name] for name in spec.kwargs}
    return model


def check_kind(spec: MethodSpec, method: str, kind: str, vit: nn.Module) -> None:
    """Refuse a method the backbone kind cannot run, naming what it can run instead."""
    if kind in spec.backbones:
        return
    name, fits = type(vit).__name__, methods_for(kind)
    if kind == "convnet" and spec.has_prompts and not spec.input_prompt:
        raise ConfigError(f"method={method!r} puts prompt tokens into the backbone, but {name} is a ConvNet: "
                          f"ConvNets have no tokens; use 'conv-pad' or a pixel prompter ('pad-prompt', "
                          f"'fixed-patch', 'random-patch'). Methods for this backbone: {fits}")
    what = "a ConvNet (learned pixels around the image grow it)" if spec.backbones == ("convnet",) else \
        "a timm VisionTransformer"
    raise ConfigError(f"method={method!r} needs {what}; backbone {name} is a {kind}. Methods for this "
                      f"backbone: {fits}")


def default_pool(vit: nn.Module, kind: str, prompt: Optional[PromptConfig], prompt_kw: dict) -> str:
    """The pool a method uses unless the user chose one: the backbone's own (``"image"`` for Swin and
    for ViTs built with ``global_pool="avg"``, such as MAE; ``"cls"`` otherwise)."""
    if prompt is not None:
        return prompt.pool
    if "pool" in prompt_kw:
        return prompt_kw["pool"]
    if kind == "swin" or getattr(vit, "global_pool", "token") == "avg":
        return "image"
    return "cls"


def method_prompt_config(spec: MethodSpec, prompt: Optional[PromptConfig], length: Optional[int],
                         prompt_kw: dict, pool: str = "cls") -> PromptConfig:
    """The PromptConfig a method builds with: its ``layers`` rule applied to the user's settings.

    Methods without prompts ignore prompt settings (length 0). Input prompts (pixel prompters,
    conv-pad) read only ``length`` and ``init``; any other field set away from its default raises.
    """
    if not spec.has_prompts:
        return PromptConfig(length=0, pool=pool)
    if spec.input_prompt:
        return input_prompt_config(spec, prompt, length, prompt_kw)
    base = prompt or PromptConfig(dropout=spec.dropout, pool=pool)
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


def input_prompt_config(spec: MethodSpec, prompt: Optional[PromptConfig], length: Optional[int],
                        prompt_kw: dict) -> PromptConfig:
    """The PromptConfig of an input prompt: ``length`` is p in pixels; every other field must keep
    its default (``init="random"``: normal values for Bahng et al.'s prompters, uniform for conv-pad)."""
    cfg = (prompt or PromptConfig(layers="shallow")).replace(**prompt_kw)
    if length is not None:
        cfg = cfg.replace(length=length)
    default = PromptConfig(layers="shallow")
    for field in ("layers", "location", "share", "pool", "dropout", "learn_cls", "init", "fixed"):
        value = getattr(cfg, field)
        if value != getattr(default, field) and not (field == "layers" and value == (0,)):
            raise ConfigError(
                f"{field}={value!r} does not apply to method={spec.name!r}: its prompt is {cfg.length} "
                f"pixels on the input image, not tokens; only length (and init='random') can be set. "
                f"Use {field}={getattr(default, field)!r}")
    return cfg.replace(layers="shallow")
