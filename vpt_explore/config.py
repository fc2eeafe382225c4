"""Frozen dataclasses that describe a prompt setup and a training run.

Widgets, the CLI and notebooks only ever build these; the library reads them. Every field is
checked in ``__post_init__`` so a bad value fails at construction, with a message that names the
field, the value and what is allowed.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Optional, Tuple, Union

from .errors import ConfigError, bad_choice

LOCATIONS = ("prepend", "add", "prepend-pixel", "concat-channel")
SHARES = ("none", "intra", "inter", "all")
POOLS = ("cls", "image", "prompt", "global")
INITS = ("random", "cls")
LAYER_WORDS = ("shallow", "deep")
OPTIMIZERS = ("auto", "sgd", "adamw")
AMPS = (None, "auto", "bf16", "fp16")

Layers = Union[str, Tuple[int, ...]]


def _check_int(name: str, value, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
    if value < low:
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")


def _check_float(name: str, value, low: float, high: float, low_open=False, high_open=True) -> None:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (lo_ok and hi_ok):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"{name}={value!r} is outside the allowed range {lo}{low}, {high}{hi}")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are added to a frozen ViT (paper Sec. 3.2 and the ablations of Sec. 4.3).

    Args:
        length: number of prompt tokens p (Fig. 6). For ``location="add"`` it must be 1 (one
            vector added to every patch) or the number of patches; for ``"concat-channel"`` it is
            the number of extra input channels.
        layers: ``"shallow"`` (eqs. 4-6: prompts enter block 0 only), ``"deep"`` (eqs. 7-8: fresh
            prompts at every block) or a tuple of 0-based block indices that receive fresh prompts
            (Fig. 7/14). Before the first index there are no prompt tokens; after the last one the
            prompt outputs carry on through the remaining blocks.
        location: ``"prepend"`` (default), ``"add"``, ``"prepend-pixel"``, ``"concat-channel"``
            (Fig. 5).
        init: ``"random"`` (uniform, Xavier bound of the patch projection) or ``"cls"`` (class
            means of the final [CLS] embeddings; needs ``length == num_classes``) (Fig. 13).
        dropout: dropout on the prompt tokens while training, in [0, 1).
        share: ``"none"``, ``"intra"`` (one vector repeated within a layer), ``"inter"`` (one
            prompt set for all layers) or ``"all"`` (one vector everywhere) (Fig. 12).
        pool: head input: ``"cls"`` token, ``"image"`` (mean of patch tokens), ``"prompt"`` (mean
            of prompt tokens) or ``"global"`` (mean of all tokens) (Fig. 8).
        fixed: keep the prompts at their initial values (Fig. 11 "prompt-fixed").
        learn_cls: also train the [CLS] token (Fig. 11 "[CLS]-learned").
    """

    length: int = 10
    layers: Layers = "deep"
    location: str = "prepend"
    init: str = "random"
    dropout: float = 0.0
    share: str = "none"
    pool: str = "cls"
    fixed: bool = False
    learn_cls: bool = False

    def __post_init__(self) -> None:
        _check_int("length", self.length)
        layers = self.layers
        if isinstance(layers, str):
            if layers not in LAYER_WORDS:
                raise bad_choice("layers", layers, LAYER_WORDS + ("(tuple of block indices)",))
        else:
            try:
                idx = tuple(layers)
            except TypeError:
                raise ConfigError(
                    f"layers={layers!r} must be 'shallow', 'deep' or a tuple of block indices"
                ) from None
            if not idx:
                raise ConfigError("layers=() is empty; give at least one block index, or use length=0")
            for i in idx:
                if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                    raise ConfigError(f"layers={layers!r}: block index {i!r} must be an integer >= 0")
            if len(set(idx)) != len(idx):
                raise ConfigError(f"layers={layers!r} repeats a block index")
            object.__setattr__(self, "layers", tuple(sorted(idx)))
        if self.location not in LOCATIONS:
            raise bad_choice("location", self.location, LOCATIONS)
        if self.init not in INITS:
            raise bad_choice("init", self.init, INITS)
        if self.share not in SHARES:
            raise bad_choice("share", self.share, SHARES)
        if self.pool not in POOLS:
            raise bad_choice("pool", self.pool, POOLS)
        _check_float("dropout", self.dropout, 0.0, 1.0)
        for name in ("fixed", "learn_cls"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.pool in ("prompt",) and (self.length == 0 or self.location != "prepend"
                                         and self.location != "prepend-pixel"):
            raise ConfigError(
                f"pool='prompt' needs prompt tokens in the sequence, but length={self.length} and "
                f"location={self.location!r}; use length >= 1 with location 'prepend' or "
                f"'prepend-pixel', or pool='cls'"
            )
        if self.location == "concat-channel":
            if self.layers != "shallow" and self.layers != (0,):
                raise ConfigError(
                    f"layers={self.layers!r} is not allowed with location='concat-channel': extra "
                    f"input channels exist only at the input; use layers='shallow'"
                )
            if self.share != "none":
                raise ConfigError(
                    f"share={self.share!r} is not allowed with location='concat-channel'; use share='none'"
                )
        if self.init == "cls" and self.location != "prepend":
            raise ConfigError(
                f"init='cls' makes token prompts from [CLS] class means, so it needs "
                f"location='prepend', not location={self.location!r}"
            )
        if self.init == "cls" and self.share in ("intra", "all"):
            raise ConfigError(
                f"init='cls' gives one prompt per class; share={self.share!r} keeps one vector per "
                f"layer. Use share='none' or 'inter'"
            )

    @property
    def is_deep(self) -> bool:
        """True when more than one block receives fresh prompts."""
        return self.layers == "deep" or (isinstance(self.layers, tuple) and len(self.layers) > 1)

    def block_indices(self, depth: int) -> Tuple[int, ...]:
        """The 0-based block indices that receive fresh prompts in a ``depth``-block ViT."""
        if self.layers == "shallow":
            return (0,)
        if self.layers == "deep":
            return tuple(range(depth))
        bad = [i for i in self.layers if i >= depth]
        if bad:
            raise ConfigError(
                f"layers={self.layers!r} names block {bad[0]}, but the backbone has {depth} blocks "
                f"(allowed indices 0..{depth - 1})"
            )
        return self.layers

    def short_name(self) -> str:
        """A compact label for tables and plot legends, e.g. ``deep p=10 prepend``."""
        layers = self.layers if isinstance(self.layers, str) else "L" + ",".join(map(str, self.layers))
        bits = [layers, f"p={self.length}"]
        for name, default in (("location", "prepend"), ("share", "none"), ("pool", "cls"), ("init", "random")):
            v = getattr(self, name)
            if v != default:
                bits.append(f"{name}={v}")
        if self.fixed:
            bits.append("fixed")
        if self.learn_cls:
            bits.append("+cls")
        return " ".join(bits)

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(d["layers"], tuple):
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PromptConfig":
        d = dict(d)
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(d["layers"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown PromptConfig field(s) {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "PromptConfig":
        """A copy with some fields changed (and checked again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """One training run (paper Sec. 4.1 / App. A recipe, scaled to the machine at hand).

    Args:
        epochs: passes over the training set.
        batch_size: images per step.
        base_lr: learning rate per 256 images; the step size is ``base_lr * batch_size / 256``.
            ``None`` picks the method's default (``vx.methods.registry.DEFAULT_BASE_LR``, scaled by
            128 / d for SGD); ``"auto"`` picks it by short runs on a validation split
            (``vx.training.lr_search``: the paper's tuning at laptop cost).
        weight_decay: decoupled for AdamW, L2 for SGD.
        optimizer: ``"auto"`` (SGD momentum 0.9 for prompt, linear, mlp, sidetune; AdamW for
            full, partial, bias, adapter), ``"sgd"`` or ``"adamw"``.
        warmup_epochs: linear warm-up, then cosine decay to zero.
        seed: seeds data order, initialisation and dropout.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        amp: ``None`` (fp32), ``"auto"`` (bf16 where the device computes it natively: a bf16 CUDA
            GPU, or a CPU with avx512_bf16 / AMX / Arm bf16; fp32 elsewhere, with a note),
            ``"bf16"`` or ``"fp16"`` autocast. ``"bf16"`` on a CPU without native bf16 is refused.
        threads: CPU threads for this run: ``None`` leaves torch's setting, an int sets it,
            ``"auto"`` uses every core when the machine is idle and leaves the busy ones to the
            other programs (``vx.training.threads.pick_threads``).
        compile: wrap the model in ``torch.compile``.
        cache_features: ``"auto"`` caches frozen backbone features when only a head trains.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        label_smoothing: cross-entropy label smoothing.
        progress: show a tqdm progress bar.
        checkpoint: a path; the best state is written there atomically after each improvement.
        num_workers: DataLoader worker processes that read the training data (for datasets decoded
            from disk); 0 batches in-process, the fastest for in-memory TaskDatasets.
    """

    epochs: int = 10
    batch_size: int = 32
    base_lr: Union[float, str, None] = None
    weight_decay: float = 1e-4
    optimizer: str = "auto"
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: Optional[str] = None
    compile: bool = False
    cache_features: Union[str, bool] = "auto"
    grad_clip: Optional[float] = None
    label_smoothing: float = 0.0
    progress: bool = True
    checkpoint: Optional[str] = None
    num_workers: int = 0
    threads: Union[int, str, None] = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.base_lr is not None and self.base_lr != "auto":
            ok = isinstance(self.base_lr, (int, float)) and not isinstance(self.base_lr, bool)
            if not ok or not math.isfinite(self.base_lr) or self.base_lr <= 0:
                raise ConfigError(f"base_lr={self.base_lr!r} must be a number > 0, 'auto' (search on a "
                                  f"validation split) or None (the method default)")
        _check_float("weight_decay", self.weight_decay, 0.0, 1.0, high_open=False)
        if self.optimizer not in OPTIMIZERS:
            raise bad_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_float("momentum", self.momentum, 0.0, 1.0)
        _check_float("warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs), high_open=False)
        _check_int("seed", self.seed)
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise bad_choice("device", self.device, ("auto", "cpu", "cuda", "mps"))
        if self.amp not in AMPS:
            raise bad_choice("amp", self.amp, AMPS)
        if self.cache_features not in ("auto", True, False):
            raise bad_choice("cache_features", self.cache_features, ("auto", True, False))
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, 0.0, float("inf"), low_open=True)
        _check_float("label_smoothing", self.label_smoothing, 0.0, 1.0)
        _check_int("num_workers", self.num_workers)
        if self.threads is not None and self.threads != "auto":
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
                raise ConfigError(f"threads={self.threads!r} must be None (torch's setting), 'auto' or an "
                                  f"integer >= 1")
        for name in ("compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise ConfigError(f"checkpoint={self.checkpoint!r} must be a file path (str or Path) or None")
        if isinstance(self.checkpoint, str) and not self.checkpoint.strip():
            raise ConfigError(f"checkpoint={self.checkpoint!r} is empty; give a file path such as "
                              f"'best.safetensors', or None")

    def lr_for(self, base_lr: float) -> float:
        """The paper's linear scaling rule: ``lr = base_lr * batch / 256``."""
        return base_lr * self.batch_size / 256

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)
