"""The training loop: plain, visible, and hard to lose work with (paper Sec. 4.1 / App. A recipe).

    history = vx.train(model, train_data, val_data, vx.TrainConfig(epochs=10))

* The recipe (optimiser, lr, warm-up + cosine schedule, AMP) lives in ``recipe.py``; batches,
  evaluation and the feature cache in ``batches.py``. ``train`` reads prepare -> epochs -> finish.
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
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError, DataError, TrainingError
from .batches import (_check_labels, _length, _load_trainable, _trainable_state, batches, cache_features, evaluate,
                      head_only)
from .lr_search import LRSearch, search_base_lr
from .recipe import SPIKE, autocast, lr_at, make_optimizer, method_of, resolve_amp, resolve_device
from .threads import apply_threads

class StopTraining(Exception):
    """Raise from a callback to stop training cleanly (the History is still returned)."""


@dataclass
class History:
    """What happened during ``train``: per-epoch rows, per-step losses, the best epoch, status.

    Attributes:
        rows: one dict per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds (since
            the start), images and train_seconds (this epoch's training pass).
        steps: one dict per optimiser step: step, epoch, loss.
        best_epoch, best_val_acc: the epoch whose weights the model holds at the end.
        status: "completed", "diverged" (the loss spiked and ended above 1.5x its start),
            "stopped" (Stop button / callback), "interrupted" (Ctrl-C) or "nan".
        message: a human sentence about how training ended.
        base_lr: the base learning rate the run used (per 256 images).
        lr_search: the ``LRSearch`` of ``TrainConfig(base_lr="auto")``, else None.
        warnings: what went wrong without stopping the run (a loss spike), one sentence each.
        loss_at_init: the yardstick for spikes: max(first step's loss, ln C) for C classes.
        amp: the autocast the run used (``None``: fp32); threads: torch's CPU threads during it.
        notes: choices made for the user (``amp="auto"`` fell back to fp32, ...), one sentence each.
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
    base_lr: Optional[float] = None
    lr_search: Optional[Any] = None
    warnings: List[str] = field(default_factory=list)
    loss_at_init: Optional[float] = None
    amp: Optional[str] = None
    threads: Optional[int] = None
    notes: List[str] = field(default_factory=list)
    best_state: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def images_per_s(self) -> Optional[float]:
        """Training throughput: images through forward + backward per second of the training passes
        (validation excluded); None before the first epoch ends."""
        seconds = sum(r.get("train_seconds", 0.0) for r in self.rows)
        return sum(r.get("images", 0) for r in self.rows) / seconds if seconds > 0 else None

    @property
    def last(self) -> Dict:
        return self.rows[-1] if self.rows else {}

    def to_dict(self) -> Dict:
        return {k: v for k, v in self.__dict__.items() if k != "best_state"}

    def plot(self):
        """Loss and accuracy curves (a matplotlib Figure)."""
        from ..analysis.viz import plot_history
        return plot_history({self.method or "model": self})


# ------------------------------------------------------------------ the loop
def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


@dataclass
class _Run:
    """Everything one ``train`` call set up (``_prepare``) and the epochs read and update."""
    model: nn.Module
    cfg: TrainConfig
    train_data: Any
    val_data: Any
    forward: Callable
    optimizer: torch.optim.Optimizer
    peak_lr: float
    total: int
    warmup: int
    device: torch.device
    gen: torch.Generator
    scaler: Any
    should_stop: Callable[[], bool]
    callbacks: tuple
    hist: History
    bar: Any = None
    step: int = 0
    t0: float = 0.0
    last_good: Dict[str, torch.Tensor] = field(default_factory=dict)


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

    Raises:
        TrainingError: training cannot start or fails before any update: the trainable weights
            are not finite, or the loss of the very first step is not finite.
    """
    threads_before = apply_threads(getattr(cfg, "threads", None))  # a bad cfg fails in _prepare
    try:
        run = _prepare(model, train_data, val_data, cfg, tuple(callbacks), stop)
    except BaseException:
        _restore_threads(threads_before)
        raise
    try:
        _run_epochs(run)
    except StopTraining as e:
        run.hist.status, run.hist.message = "stopped", f"stopped at step {run.step}: {e}"
    except KeyboardInterrupt:
        run.hist.status, run.hist.message = "interrupted", f"interrupted at step {run.step} (Ctrl-C)"
    finally:
        run.bar.close()
        _restore_threads(threads_before)
    return _finish(run)


def _restore_threads(before) -> None:
    if before is not None:
        torch.set_num_threads(before)


def find_base_lr(model: nn.Module, train_data, val_data=None, cfg: Optional[TrainConfig] = None, *,
                 grid=None, progress: bool = False) -> LRSearch:
    """``TrainConfig(base_lr="auto")`` on its own: short runs of ``train`` pick base_lr on validation
    accuracy (see ``lr_search.py``); the model's trainable tensors are left as they were."""
    return search_base_lr(model, train_data, val_data, cfg, train, grid=grid, progress=progress)


def _check_inputs(model: nn.Module, train_data, val_data, cfg: TrainConfig) -> int:
    """Fail before any work on a bad call; returns the number of training examples."""
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
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("the model has no trainable parameters (is everything frozen or prompts fixed "
                          "without a head?)")
    bad = [k for k, p in trainable if not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(f"the trainable tensor {bad[0]!r} holds NaN/inf before training "
                            f"({len(bad)} such tensors): rebuild the model or load a good prompt file")
    _check_labels(model, train_data, "train_data")
    if val_data is not None:
        _check_labels(model, val_data, "val_data")
    return n_train


def _prepare(model, train_data, val_data, cfg, callbacks, stop) -> _Run:
    """Check the call, seed, pick the device, cache frozen features, build optimiser and schedule."""
    cfg = cfg or TrainConfig()
    n_train = _check_inputs(model, train_data, val_data, cfg)
    method = method_of(model)
    search = None
    if cfg.base_lr == "auto":  # short runs on a validation split pick it (lr_search.py)
        search = find_base_lr(model, train_data, val_data, cfg)
        cfg = cfg.replace(base_lr=search.best)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    amp, amp_note = resolve_amp(cfg.amp, device)
    cfg = cfg.replace(amp=amp)
    model.to(device)
    hist = History(method=method, trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                   lr_search=search, amp=amp, threads=torch.get_num_threads())
    if amp_note:
        hist.notes.append(amp_note)

    # Fast path: frozen features + head only -> compute features once (linear, mlp-k, fixed prompts)
    forward = model
    if cfg.cache_features is True or (cfg.cache_features == "auto" and head_only(model)):
        train_data = cache_features(model, train_data, 256, device, cfg.num_workers)
        val_data = cache_features(model, val_data, 256, device, cfg.num_workers) if val_data is not None else None
        forward = model.forward_head
        hist.cached_features = True
    elif cfg.compile:
        if hasattr(model, "block_path"):
            model.block_path()  # check the prefix path before tracing, or the first trace recompiles
        forward = torch.compile(model)

    optimizer, peak_lr = make_optimizer(model, cfg, method)
    hist.base_lr = peak_lr * 256 / cfg.batch_size
    steps_per_epoch = len(train_data) if isinstance(train_data, torch.utils.data.DataLoader) \
        else math.ceil(n_train / cfg.batch_size)
    should_stop = (stop.is_set if hasattr(stop, "is_set") else stop) or (lambda: False)
    run = _Run(model, cfg, train_data, val_data, forward, optimizer, peak_lr, cfg.epochs * steps_per_epoch,
               int(round(cfg.warmup_epochs * steps_per_epoch)), device, gen,
               torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"), should_stop, callbacks, hist)
    run.last_good = _trainable_state(model)
    run.t0 = time.time()
    run.bar = _progress(run.total, cfg.progress, method)
    return run


def _run_epochs(run: _Run) -> None:
    """Epoch after epoch: train, validate, keep the best weights; stops early on a non-finite loss."""
    for epoch in range(1, run.cfg.epochs + 1):
        run.model.train()
        run.last_good = _trainable_state(run.model)
        row = _run_epoch(run, epoch)
        if row is None:  # non-finite loss: weights restored, History says why
            return
        if run.val_data is not None:
            ev = evaluate(run.model, run.val_data, 256, run.device, forward=run.forward)
            row.update(val_loss=ev["loss"], val_acc=ev["acc"])
        run.hist.rows.append(row)
        _track_best(run.model, run.hist, row, run.cfg)
        for cb in run.callbacks:
            cb("epoch", run.hist, run.model)
    run.hist.status = "diverged" if _diverged(run.hist) else "completed"
    if run.hist.status == "diverged":
        run.hist.message = (f"diverged: the last epoch's training loss ({run.hist.rows[-1]['train_loss']:.3g}) is "
                            f"above {SPIKE}x its start ({run.hist.loss_at_init:.3g}); lower base_lr "
                            f"(now {run.hist.base_lr:.3g}) or use base_lr='auto'.")


def _run_epoch(run: _Run, epoch: int) -> Optional[Dict]:
    """One pass over the training data (eq. for the step: SGD/AdamW on cross-entropy); the epoch's row."""
    cfg, hist, optimizer = run.cfg, run.hist, run.optimizer
    loss_sum, correct, seen, t_start = 0.0, 0, 0, time.time()
    for x, y in batches(run.train_data, cfg.batch_size, shuffle=True, generator=run.gen,
                        num_workers=cfg.num_workers):
        if run.should_stop():
            raise StopTraining("stop requested")
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        for g in optimizer.param_groups:
            g["lr"] = lr_at(run.step, run.total, run.warmup, run.peak_lr)
        with autocast(run.device, cfg.amp):
            logits = run.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            _stop_on_bad_loss(run, epoch, loss)
            return None
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            run.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], cfg.grad_clip)
        run.scaler.step(optimizer)
        run.scaler.update()
        run.step += 1
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        hist.steps.append({"step": run.step, "epoch": epoch, "loss": loss.item()})
        if hist.loss_at_init is None:
            hist.loss_at_init = max(loss.item(), math.log(logits.shape[-1]))
        _check_spike(hist)
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        for cb in run.callbacks:
            cb("step", hist, run.model)
    return {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - run.t0,
            "images": seen, "train_seconds": time.time() - t_start}


def _stop_on_bad_loss(run: _Run, epoch: int, loss: torch.Tensor) -> None:
    """A NaN/inf loss: before any update it is a TrainingError; later, restore and stop with a warning."""
    if run.step == 0:
        raise TrainingError(f"the loss is {loss.item()} at the first step, before any update: the model "
                            f"or the data produce non-finite values (check the images for NaN/inf and "
                            f"the model's weights); the learning rate is not the cause")
    _load_trainable(run.model, run.last_good)
    run.hist.status = "nan"
    run.hist.message = (f"loss became {loss.item()} at epoch {epoch}, step {run.step + 1} "
                        f"(lr={run.optimizer.param_groups[0]['lr']:.3g}); restored the weights from "
                        f"the start of epoch {epoch}. Try a smaller base_lr or grad_clip.")
    warnings.warn(run.hist.message, RuntimeWarning, stacklevel=5)


def _finish(run: _Run) -> History:
    """Put the best weights back, time the run, eval mode, and tell the callbacks it ended."""
    hist, model = run.hist, run.model
    if hist.best_state:
        _load_trainable(model, hist.best_state)
        hist.message += f"{' ' if hist.message else ''}Model holds the weights of epoch {hist.best_epoch}."
    hist.seconds = time.time() - run.t0
    model.eval()
    for cb in run.callbacks:
        try:
            cb("end", hist, model)
        except StopTraining:
            pass
    return hist


def _check_spike(hist: History) -> None:
    """Warn once when a step's loss exceeds SPIKE x the loss at initialisation (about ln C)."""
    first, now = hist.loss_at_init, hist.steps[-1]["loss"]
    if now > SPIKE * first and not any(w.startswith("loss spiked") for w in hist.warnings):
        msg = (f"loss spiked to {now:.3g} at step {hist.steps[-1]['step']} (epoch {hist.steps[-1]['epoch']}), "
               f"{now / first:.1f}x its start ({first:.3g}): the learning rate is probably too high for this "
               f"backbone; try TrainConfig(base_lr='auto') or a smaller base_lr")
        hist.warnings.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _diverged(hist: History) -> bool:
    """The loss spiked and the last epoch still ended above SPIKE x where training started."""
    return bool(hist.warnings and hist.rows and hist.rows[-1]["train_loss"] > SPIKE * hist.loss_at_init)


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
            from ..model.prompt_file import save_checkpoint
            save_checkpoint(model, cfg.checkpoint, extra={"epoch": str(row["epoch"])})
