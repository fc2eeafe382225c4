"""The transfer methods as data: one ``MethodSpec`` per method, read by make_model, training, the
demo, the lab, sweep and bench (paper Table 1, Sec. 4.1 / App. A).

    spec, k = parse_method("partial-2")     # (MethodSpec(name="partial", ...), 2)
    spec.has_prompts, spec.tunes_backbone, spec.optimizer, spec.base_lr

Adding a method is one ``register_method(MethodSpec(...))`` plus its builder; ``make_model``,
``default_base_lr`` and the optimiser choice follow from the spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from ..errors import ConfigError, did_you_mean
from . import modules as m

# Default base learning rates per 256 images (lr = base_lr * batch / 256), the README's table.
# Chosen with tiny-dino on the offline suite (scan: 300 training images, 5 epochs, textures and
# count, every candidate's max step loss / loss at init and its validation accuracy): each is the
# best-validating value among those whose loss never rose above 1.5x its start. In that scan
# VPT-shallow at 1.0 reached 3.1x its start and full fine-tuning at 8e-3 1.5x; on shapes-loc (400
# images, 6 epochs, the backbone after 3 of its 6 distillation epochs) VPT-deep at 0.5 reached 2.1x,
# at 2.0 22.7x, and linear at 0.5 2.0x.
# The paper tunes over {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05} with 100 epochs: use
# TrainConfig(base_lr="auto") for its tuning at laptop cost. SGD defaults are for d=128 and scale
# with 128/d: the head sees LayerNorm'd features whose squared norm is about d, so the largest
# stable step shrinks like 1/d (DINOv2-S, d=384, gets a third).
DEFAULT_BASE_LR = {"vpt": 0.1, "linear": 0.1, "mlp": 0.1, "sidetune": 0.1, "ensemble": 0.1,
                   "bias": 8e-2, "adapter": 4e-2, "vpt+bias": 4e-2, "partial": 2e-3, "full": 2e-3}
FALLBACK_BASE_LR = {"sgd": 0.1, "adamw": 2e-3}
SGD_METHODS = ("vpt", "vpt-shallow", "vpt-deep", "linear", "mlp", "sidetune", "ensemble")


@dataclass(frozen=True)
class MethodSpec:
    """What a transfer method is, as the rest of the library needs to know it.

    Attributes:
        name: the method name without k (``"partial"`` for ``"partial-2"``).
        build: ``build(backbone, num_classes, cfg, k, options) -> PromptedViT``; ``backbone`` is
            already a deep copy when ``tunes_backbone``; ``options`` holds reduction, members, seed.
        has_prompts: takes a PromptConfig (``length``, ``layers``, ...).
        tunes_backbone: trains weights inside the backbone (make_model then works on a copy).
        optimizer: ``"sgd"`` or ``"adamw"`` (the paper's choice for this method).
        takes_k: written ``name-k`` (partial-k, mlp-k); ``example_k`` is the k shown in METHODS.
        k_max: the largest k (None: the backbone depth).
        layers: for prompt methods, the ``layers`` it forces ("shallow") or defaults to ("deep").
        dropout: the prompt dropout of its default PromptConfig.
        kwargs: the make_model options stored in a prompt file (e.g. ("reduction",)).
        backbones: the backbone kinds it runs on (``model.input_prompted.KINDS``): ``"vit"`` (token
            prompts, every method), ``"swin"`` (window prompts, linear, input prompts), ``"convnet"``.
        input_prompt: the prompt is on the input image (pixel prompters, conv-pad): only
            ``length`` (p, in pixels) and ``init`` of its PromptConfig are read.
    """
    name: str
    build: Callable
    has_prompts: bool = False
    tunes_backbone: bool = False
    optimizer: str = "adamw"
    takes_k: bool = False
    example_k: Optional[int] = None
    k_max: Optional[int] = None
    layers: Optional[str] = None
    dropout: float = 0.0
    kwargs: Tuple[str, ...] = ()
    backbones: Tuple[str, ...] = ("vit",)
    input_prompt: bool = False

    @property
    def base_lr(self) -> float:
        """The default base lr (per 256 images, d=128) with this method's own optimiser."""
        return _default_base_lr(self.name, self.optimizer)

    def label(self) -> str:
        """The name as listed in METHODS (``partial-1``, ``mlp-3``, ``vpt-deep``)."""
        return f"{self.name}-{self.example_k}" if self.takes_k else self.name


ANY, TOKENS = ("vit", "swin", "convnet"), ("vit", "swin")
_INPUT = dict(has_prompts=True, optimizer="sgd", layers="shallow", input_prompt=True)
_BUILT_IN = (  # in the order of METHODS
    MethodSpec("full", m.build_full, tunes_backbone=True),
    MethodSpec("linear", m.build_frozen, optimizer="sgd", backbones=ANY),
    MethodSpec("partial", m.build_partial, tunes_backbone=True, takes_k=True, example_k=1),
    MethodSpec("mlp", m.build_mlp, optimizer="sgd", takes_k=True, example_k=3, k_max=8),
    MethodSpec("sidetune", m.build_sidetune, optimizer="sgd"),
    MethodSpec("bias", m.build_bias, tunes_backbone=True),
    MethodSpec("adapter", m.build_adapter, tunes_backbone=True, kwargs=("reduction",)),
    MethodSpec("vpt-shallow", m.build_frozen, has_prompts=True, optimizer="sgd", layers="shallow",
               backbones=TOKENS),
    MethodSpec("vpt-deep", m.build_frozen, has_prompts=True, optimizer="sgd", layers="deep", dropout=0.1,
               backbones=TOKENS),
    MethodSpec("vpt+bias", m.build_bias, has_prompts=True, tunes_backbone=True, layers="deep", dropout=0.1),
    MethodSpec("ensemble", m.build_ensemble, has_prompts=True, optimizer="sgd", layers="deep", dropout=0.1,
               kwargs=("members",)),
    # input prompts (beyond the plain ViT): p is a width in pixels; any frozen backbone
    MethodSpec("pad-prompt", m.build_pad_prompt, **_INPUT, backbones=ANY),
    MethodSpec("fixed-patch", m.build_fixed_patch, **_INPUT, backbones=ANY),
    MethodSpec("random-patch", m.build_random_patch, **_INPUT, backbones=ANY),
    MethodSpec("conv-pad", m.build_conv_pad, **_INPUT, backbones=("convnet",)),
)
_SPECS: Dict[str, MethodSpec] = {s.name: s for s in _BUILT_IN}



def register_method(spec: MethodSpec) -> MethodSpec:
    """Make ``spec`` known to make_model, training and the front ends (replaces one of the same name)."""
    if not isinstance(spec, MethodSpec):
        raise ConfigError(f"spec={spec!r} must be a MethodSpec")
    if spec.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"optimizer={spec.optimizer!r} must be 'sgd' or 'adamw'")
    _SPECS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Forget a method added with ``register_method``."""
    _SPECS.pop(name, None)


def method_names() -> Tuple[str, ...]:
    """Every known method as written in METHODS (``partial-k`` / ``mlp-k`` shown with an example k)."""
    return tuple(s.label() for s in _SPECS.values())


def methods_for(kind: str) -> Tuple[str, ...]:
    """The methods (as written in METHODS) that run on a backbone kind: "vit", "swin" or "convnet"."""
    return tuple(s.label() for s in _SPECS.values() if kind in s.backbones)


def get_spec(name: str) -> Optional[MethodSpec]:
    """The spec of a method name without k, or None."""
    return _SPECS.get(name)


def parse_method(method: str) -> Tuple[MethodSpec, Optional[int]]:
    """``"partial-2" -> (spec of partial, 2)``; ``"vpt-deep" -> (spec of vpt-deep, None)``.

    Raises:
        ConfigError: an unknown name (with the list and a did-you-mean), or k < 1.
    """
    if isinstance(method, str) and method in _SPECS and not _SPECS[method].takes_k:
        return _SPECS[method], None
    name, _, k = method.rpartition("-") if isinstance(method, str) else ("", "", "")
    spec = _SPECS.get(name)
    if spec is None or not spec.takes_k or not k.isdigit() or not k.isascii():
        names = method_names()
        with_k = " and ".join(f"{s.name}-k" for s in _SPECS.values() if s.takes_k)
        raise ConfigError(f"method={method!r} is not known; choose one of {list(names)} ({with_k} "
                          f"take any k >= 1){did_you_mean(method, names)}")
    if int(k) < 1:
        raise ConfigError(f"method={method!r}: k={int(k)} must be >= 1 ({name}-k takes any k >= 1)")
    return spec, int(k)


def method_family(method: str) -> str:
    """The spec name of a method string, or the string itself when it is not a known method."""
    try:
        return parse_method(method)[0].name
    except ConfigError:
        return method


def optimizer_for(method: str) -> str:
    """The paper's optimiser for ``method`` (SGD for prompts and heads, AdamW when weights change)."""
    spec = _SPECS.get(method_family(method))
    if spec is not None:
        return spec.optimizer
    # "vpt" (a PromptedViT built directly) or a name set by hand: the family decides
    return "sgd" if method.split("-")[0] in SGD_METHODS or method in SGD_METHODS else "adamw"


def default_base_lr(method: str, optimizer: str, dim: int = 128) -> float:
    """The base lr used when TrainConfig.base_lr is None (SGD ones scaled by 128 / d)."""
    lr = _default_base_lr(method, optimizer)
    return lr * 128 / dim if optimizer == "sgd" else lr


def _default_base_lr(method: str, optimizer: str) -> float:
    family = method.split("-")[0] if method.startswith(("vpt-", "partial-", "mlp-")) else method
    if optimizer == "sgd" and family in ("bias", "adapter", "vpt+bias", "partial", "full"):
        return FALLBACK_BASE_LR["sgd"] / 20
    if optimizer == "adamw" and family in ("vpt", "linear", "mlp", "sidetune", "ensemble"):
        return FALLBACK_BASE_LR["adamw"]
    return DEFAULT_BASE_LR.get(family, FALLBACK_BASE_LR[optimizer])
