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

# A method run with the optimiser that is not its own (TrainConfig(optimizer=...)) starts from these
# base lrs: AdamW's usual 2e-3, and SGD at 1/20 of the heads' 0.1 when it moves backbone weights.
OTHER_OPTIMIZER_BASE_LR = {"sgd": 5e-3, "adamw": 2e-3}
FALLBACK_BASE_LR = {"sgd": 0.1, "adamw": 2e-3}  # a spec's base_lr when it gives none


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
        base_lr: the default base lr per 256 images with ``optimizer`` (lr = base_lr * batch / 256;
            SGD ones are for d=128 and scale with 128/d, see ``default_base_lr``). The README's
            "Learning rates" section says how the built-in ones were chosen;
            ``TrainConfig(base_lr="auto")`` searches around it.
        eval_prefix: evaluate through the exact cached-K/V prefix path where it applies
            (``inference_model``): VPT-deep.
        listed: shown in METHODS (False for ``"vpt"``, a PromptedViT built directly).
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
    base_lr: Optional[float] = None
    eval_prefix: bool = False
    listed: bool = True
    takes_k: bool = False
    example_k: Optional[int] = None
    k_max: Optional[int] = None
    layers: Optional[str] = None
    dropout: float = 0.0
    kwargs: Tuple[str, ...] = ()
    backbones: Tuple[str, ...] = ("vit",)
    input_prompt: bool = False

    def __post_init__(self):
        if self.base_lr is None:
            object.__setattr__(self, "base_lr", FALLBACK_BASE_LR.get(self.optimizer, 2e-3))

    def base_lr_for(self, optimizer: str) -> float:
        """The default base lr (per 256 images, d=128) when trained with ``optimizer``."""
        return self.base_lr if optimizer == self.optimizer else OTHER_OPTIMIZER_BASE_LR[optimizer]

    def label(self) -> str:
        """The name as listed in METHODS (``partial-1``, ``mlp-3``, ``vpt-deep``)."""
        return f"{self.name}-{self.example_k}" if self.takes_k else self.name


ANY, TOKENS = ("vit", "swin", "convnet"), ("vit", "swin")
_SGD, _INPUT = dict(optimizer="sgd", base_lr=0.1), dict(has_prompts=True, optimizer="sgd", base_lr=0.1,
                                                        layers="shallow", input_prompt=True)
_BUILT_IN = (  # in the order of METHODS; base lrs: the README's "Learning rates"
    MethodSpec("full", m.build_full, tunes_backbone=True, base_lr=2e-3),
    MethodSpec("linear", m.build_frozen, **_SGD, backbones=ANY),
    MethodSpec("partial", m.build_partial, tunes_backbone=True, base_lr=2e-3, takes_k=True, example_k=1),
    MethodSpec("mlp", m.build_mlp, **_SGD, takes_k=True, example_k=3, k_max=8),
    MethodSpec("sidetune", m.build_sidetune, **_SGD),
    MethodSpec("bias", m.build_bias, tunes_backbone=True, base_lr=8e-2),
    MethodSpec("adapter", m.build_adapter, tunes_backbone=True, base_lr=4e-2, kwargs=("reduction",)),
    MethodSpec("vpt-shallow", m.build_frozen, has_prompts=True, **_SGD, layers="shallow", backbones=TOKENS),
    MethodSpec("vpt-deep", m.build_frozen, has_prompts=True, **_SGD, layers="deep", dropout=0.1,
               eval_prefix=True, backbones=TOKENS),
    MethodSpec("vpt+bias", m.build_bias, has_prompts=True, tunes_backbone=True, base_lr=4e-2, layers="deep",
               dropout=0.1),
    MethodSpec("ensemble", m.build_ensemble, has_prompts=True, **_SGD, layers="deep", dropout=0.1,
               kwargs=("members",)),
    # input prompts (beyond the plain ViT): p is a width in pixels; any frozen backbone
    MethodSpec("pad-prompt", m.build_pad_prompt, **_INPUT, backbones=ANY),
    MethodSpec("fixed-patch", m.build_fixed_patch, **_INPUT, backbones=ANY),
    MethodSpec("random-patch", m.build_random_patch, **_INPUT, backbones=ANY),
    MethodSpec("conv-pad", m.build_conv_pad, **_INPUT, backbones=("convnet",)),
    # a PromptedViT built directly (its PromptConfig as given): trains like the prompt methods
    MethodSpec("vpt", m.build_frozen, has_prompts=True, **_SGD, backbones=TOKENS, listed=False),
)
_SPECS: Dict[str, MethodSpec] = {s.name: s for s in _BUILT_IN}
# the built-in defaults as tables (read-only views of the specs above)
DEFAULT_BASE_LR: Dict[str, float] = {s.name: s.base_lr for s in _BUILT_IN}
SGD_METHODS: Tuple[str, ...] = tuple(s.name for s in _BUILT_IN if s.optimizer == "sgd")



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
    return tuple(s.label() for s in _SPECS.values() if s.listed)


def methods_for(kind: str) -> Tuple[str, ...]:
    """The methods (as written in METHODS) that run on a backbone kind: "vit", "swin" or "convnet"."""
    return tuple(s.label() for s in _SPECS.values() if s.listed and kind in s.backbones)


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


def method_of(model) -> str:
    """The method a model was built as: ``model.method``, set by make_model; "vpt" for a
    PromptedViT built directly (its class default) or any model without one."""
    return getattr(model, "method", "vpt")


def spec_of(model) -> Tuple[MethodSpec, Optional[int]]:
    """The (spec, k) of ``method_of(model)``; a name this registry does not know counts as "vpt"."""
    try:
        return parse_method(method_of(model))
    except ConfigError:
        return _SPECS["vpt"], None


def optimizer_for(method: str) -> str:
    """The paper's optimiser for ``method`` (SGD for prompts and heads, AdamW when weights change);
    a name this registry does not know gets AdamW."""
    spec = _SPECS.get(method_family(method))
    return spec.optimizer if spec is not None else "adamw"


def default_base_lr(method: str, optimizer: str, dim: int = 128) -> float:
    """The base lr used when TrainConfig.base_lr is None (SGD ones scaled by 128 / d)."""
    spec = _SPECS.get(method_family(method))
    lr = spec.base_lr_for(optimizer) if spec is not None else FALLBACK_BASE_LR[optimizer]
    return lr * 128 / dim if optimizer == "sgd" else lr


def inference_model(model):
    """The model to evaluate: its exact cached-K/V ``PrefixViT`` where its method evaluates that way
    (``MethodSpec.eval_prefix``) and the setup allows it, else the model itself (in eval mode)."""
    model.eval()
    if spec_of(model)[0].eval_prefix and hasattr(model, "as_prefix"):
        try:
            return model.as_prefix()
        except ConfigError:
            pass
    return model

