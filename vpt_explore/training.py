"""The training loop: plain, visible, and hard to lose work with (paper Sec. 4.1 / App. A recipe).

    history = vx.train(model, train_data, val_data, vx.TrainConfig(epochs=10))

* SGD with momentum 0.9 for prompts, linear, mlp and sidetune heads; AdamW for full, partial,
  bias and adapter tuning. ``lr = base_lr * batch / 256``, linear warm-up, then cosine decay.
* When only a head trains on a frozen, deterministic backbone (linear, mlp-k), features are
  computed once and cached, so a linear probe takes seconds.
* Validation every epoch; the best weights (by validation accuracy) are kept in memory and put
  back at the end. Stop (a callback, a ``stop`` event) or Ctrl-C returns the History so far with
  the best weights loaded; a NaN/inf loss stops at that step and restores the last good weights.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .errors import ConfigError, DataError

SGD_METHODS = ("vpt", "vpt-shallow", "vpt-deep", "linear", "mlp", "sidetune", "ensemble")
# base learning rates per 256 images (lr = base_lr * batch / 256), chosen on the offline suite
# with the tiny backbone; the paper tunes over {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05}.
# SGD defaults are for d=128 and scale with 128/d: the head sees LayerNorm'd features whose squared
# norm is about d, so the largest stable step shrinks like 1/d (DINOv2-S, d=384, gets a third).
DEFAULT_BASE_LR = {"vpt": 4.0, "linear": 1.0, "mlp": 0.5, "sidetune": 0.5, "ensemble": 4.0,
                   "bias": 8e-2, "adapter": 4e-2, "vpt+bias": 4e-2, "partial": 8e-3, "full": 8e-3}
FALLBACK_BASE_LR = {"sgd": 2.0, "adamw": 4e-3}


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


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly (the History is still returned)."""


@dataclass
class History:
    """What happened during ``train``: per-epoch rows, per-step losses, the best epoch, status.

    Attributes:
        rows: one dict per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds.
        steps: one dict per optimiser step: step, epoch, loss.
        best_epoch, best_val_acc: the epoch whose weights the model holds at the end.
        status: "completed", "stopped" (Stop button / callback), "interrupted" (Ctrl-C) or "nan".
        message: a human sentence about how training ended.
        best_state: the trainable tensors of the best epoch (kept in memory, CPU).
    """
    rows: List[Dict] = field(default_factory=list)
    steps: List[Dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_val_acc: Optional[float] = None
    status: str = "running"
    message: str = ""
    method: str = ""
    trainable: int = 0
    seconds: float = 0.0
    cached_features: bool = False
    best_state: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def last(self) -> Dict:
        return self.rows[-1] if self.rows else {}

    def to_dict(self) -> Dict:
        return {k: v for k, v in self.__dict__.items() if k != "best_state"}

    def plot(self):
        """Loss and accuracy curves (a matplotlib Figure)."""
        from .viz import plot_history
        return plot_history({self.method or "model": self})


# ------------------------------------------------------------------ data helpers
def _tensors(data):
    """(images, labels) tensors when the dataset holds them in memory, else None."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, torch.as_tensor(data.labels)
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        return data.tensors
    return None


def _length(data) -> int:
    if isinstance(data, torch.utils.data.DataLoader):
        return len(data.dataset)
    try:
        return len(data)
    except TypeError:
        raise DataError(f"training data of type {type(data).__name__} has no length; pass a Dataset "
                        f"or DataLoader") from None


def batches(data, batch_size: int, shuffle: bool = False, generator=None) -> Iterable:
    """Yield (images, labels) batches from a Dataset, TensorDataset-like object or DataLoader."""
    if isinstance(data, torch.utils.data.DataLoader):
        yield from data
        return
    t = _tensors(data)
    if t is not None:
        x, y = t
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for k in range(0, len(x), batch_size):
            idx = order[k:k + batch_size]
            yield x[idx], y[idx]
        return
    yield from torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _check_labels(model: nn.Module, data, name: str) -> None:
    n_cls = getattr(model, "num_classes", None)
    t = _tensors(data)
    if t is None or len(t[1]) == 0:
        return
    if t[1].is_floating_point() or t[1].dtype == torch.bool:
        raise DataError(f"{name} has labels of dtype {t[1].dtype}; class labels must be integers "
                        f"(torch.long), e.g. labels.long()")
    if n_cls is None:
        return
    lo, hi = int(t[1].min()), int(t[1].max())
    if lo < 0 or hi >= n_cls:
        raise DataError(f"{name} has labels in [{lo}, {hi}] but the model has num_classes={n_cls}; build "
                        f"the model with num_classes={hi + 1} (or the task's num_classes)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    return torch.device(name)


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 256, device=None, forward=None) -> Dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``data``."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    forward = forward or model
    total_loss, correct, n = 0.0, 0, 0
    for x, y in batches(data, batch_size):
        x, y = x.to(device), y.to(device)
        logits = forward(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise DataError("evaluation data is empty")
    return {"loss": total_loss / n, "acc": correct / n, "n": n}


# ------------------------------------------------------------------ the loop
def _trainable_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.named_parameters() if v.requires_grad}


def _load_trainable(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def head_only(model: nn.Module) -> bool:
    """True when only ``head.*`` trains and features are deterministic, so they can be cached."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    no_dropout = getattr(getattr(model, "prompt_dropout", None), "p", 0.0) == 0.0
    return bool(names) and all(k.startswith("head.") for k in names) and no_dropout and \
        hasattr(model, "forward_features") and hasattr(model, "forward_head")


@torch.no_grad()
def cache_features(model: nn.Module, data, batch_size: int, device) -> torch.utils.data.TensorDataset:
    """Run the frozen part once: a TensorDataset of (features (N, D), labels (N,))."""
    model.eval()
    feats, labels = [], []
    for x, y in batches(data, batch_size):
        feats.append(model.forward_features(x.to(device)).float())
        labels.append(torch.as_tensor(y).to(device))
    return torch.utils.data.TensorDataset(torch.cat(feats), torch.cat(labels))


def make_optimizer(model: nn.Module, cfg: TrainConfig, method: str):
    """SGD (momentum 0.9) or AdamW per the paper's recipe, at lr = base_lr * batch / 256."""
    kind = cfg.optimizer
    if kind == "auto":
        kind = "sgd" if method.split("-")[0] in SGD_METHODS or method in SGD_METHODS else "adamw"
    dim = getattr(model, "embed_dim", 128)
    base_lr = cfg.base_lr if cfg.base_lr is not None else default_base_lr(method, kind, dim)
    lr = cfg.lr_for(base_lr)
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay), lr
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay), lr


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


def train(model: nn.Module, train_data, val_data=None, cfg: Optional[TrainConfig] = None, *,
          callbacks: Iterable[Callable] = (), stop=None) -> History:
    """Train the trainable parameters of ``model``; return a History.

    Args:
        model: any model from ``make_model`` / ``PromptedViT`` (trainable tensors have requires_grad).
        train_data: a Dataset (in-memory TaskDataset is fastest) or DataLoader of (image, label).
        val_data: evaluated after every epoch; the best epoch's weights are restored at the end.
        cfg: a TrainConfig (defaults if None).
        callbacks: callables ``cb(event, history, model)`` with event "step", "epoch" or "end";
            raise ``StopTraining`` to stop.
        stop: an object with ``is_set()`` (threading.Event) or a callable returning True to stop.

    Returns:
        The History; the model holds the best weights (or the last good ones).
    """
    cfg = cfg or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg={cfg!r} must be a vx.TrainConfig")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={model!r} must be a torch module, e.g. from vx.make_model(...)")
    n_train = _length(train_data)
    if n_train == 0:
        raise DataError("train_data is empty: there is nothing to train on")
    if val_data is not None and _length(val_data) == 0:
        raise DataError("val_data is empty; pass None to skip validation")
    if not isinstance(train_data, torch.utils.data.DataLoader) and cfg.batch_size > n_train:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set ({n_train} "
                          f"examples); use batch_size <= {n_train}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the model has no trainable parameters (is everything frozen or prompts fixed "
                          "without a head?)")
    _check_labels(model, train_data, "train_data")
    if val_data is not None:
        _check_labels(model, val_data, "val_data")

    method = getattr(model, "method", "vpt")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    hist = History(method=method, trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))

    # Fast path: frozen features + head only -> compute features once (linear, mlp-k, fixed prompts)
    forward = model
    use_cache = cfg.cache_features is True or (cfg.cache_features == "auto" and head_only(model))
    if use_cache:
        train_data = cache_features(model, train_data, 256, device)
        val_data = cache_features(model, val_data, 256, device) if val_data is not None else None
        forward = model.forward_head
        hist.cached_features = True
    elif cfg.compile:
        forward = torch.compile(model)

    optimizer, peak_lr = make_optimizer(model, cfg, method)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size) if not isinstance(train_data, torch.utils.data.DataLoader) \
        else len(train_data)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    amp = dict(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp],
               enabled=True) if cfg.amp else dict(device_type=device.type, enabled=False)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    should_stop = (stop.is_set if hasattr(stop, "is_set") else stop) or (lambda: False)

    last_good = _trainable_state(model)
    t0, step = time.time(), 0
    bar = _progress(total, cfg.progress, method)
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            last_good = _trainable_state(model)
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in batches(train_data, cfg.batch_size, shuffle=True, generator=gen):
                if should_stop():
                    raise StopTraining("stop requested")
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, total, warmup, peak_lr)
                with torch.autocast(**amp):
                    logits = forward(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    _load_trainable(model, last_good)
                    hist.status = "nan"
                    hist.message = (f"loss became {loss.item()} at epoch {epoch}, step {step + 1} "
                                    f"(lr={optimizer.param_groups[0]['lr']:.3g}); restored the weights from "
                                    f"the start of epoch {epoch}. Try a smaller base_lr or grad_clip.")
                    warnings.warn(hist.message, RuntimeWarning, stacklevel=2)
                    break
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                hist.steps.append({"step": step, "epoch": epoch, "loss": loss.item()})
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                for cb in callbacks:
                    cb("step", hist, model)
            if hist.status == "nan":
                break
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - t0}
            if val_data is not None:
                ev = evaluate(model, val_data, 256, device, forward=forward)
                row.update(val_loss=ev["loss"], val_acc=ev["acc"])
            hist.rows.append(row)
            _track_best(model, hist, row, cfg)
            for cb in callbacks:
                cb("epoch", hist, model)
        else:
            hist.status = "completed"
    except StopTraining as e:
        hist.status, hist.message = "stopped", f"stopped at step {step}: {e}"
    except KeyboardInterrupt:
        hist.status, hist.message = "interrupted", f"interrupted at step {step} (Ctrl-C)"
    finally:
        bar.close()
    if hist.best_state:
        _load_trainable(model, hist.best_state)
        hist.message += f"{' ' if hist.message else ''}Model holds the weights of epoch {hist.best_epoch}."
    hist.seconds = time.time() - t0
    model.eval()
    for cb in callbacks:
        try:
            cb("end", hist, model)
        except StopTraining:
            pass
    return hist


def _track_best(model: nn.Module, hist: History, row: Dict, cfg: TrainConfig) -> None:
    """Keep the best epoch's trainable tensors (by val accuracy, else by train loss)."""
    score = row.get("val_acc", -row["train_loss"])
    best = hist.best_val_acc if "val_acc" in row else (None if hist.best_epoch is None else
                                                        -hist.rows[hist.best_epoch - 1]["train_loss"])
    if best is None or score > best:
        hist.best_epoch = row["epoch"]
        hist.best_val_acc = row.get("val_acc")
        hist.best_state = _trainable_state(model)
        if cfg.checkpoint:
            from .files import save_checkpoint
            save_checkpoint(model, cfg.checkpoint, extra={"epoch": str(row["epoch"])})
