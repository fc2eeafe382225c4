"""``TrainConfig(base_lr="auto")``: pick the learning rate on a validation split, the paper's way, cheaply.

The paper (App. A) tunes ``base_lr`` for every task and method on train800 -> val200 over the grid
{50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05}, with full 100-epoch runs. Here each candidate gets
a short run (``SEARCH_EPOCHS`` epochs on at most ``SEARCH_TRAIN`` training images, the same warm-up +
cosine schedule), scored by its best validation accuracy. Candidates are the paper's grid values
(multiplied by 1e-3 for AdamW methods) between a fifth and five times the method's default, so a
search costs about ``len(grid) * SEARCH_EPOCHS / cfg.epochs`` of the final run on the full data
(``LRSearch.seconds`` says what it cost). Candidates whose loss spiked above 1.5x its start are
passed over unless all did. The model's trainable tensors are put back as they were afterwards.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from .batches import _length, _load_trainable, _tensors, _trainable_state
from .recipe import SPIKE, default_base_lr, method_of, optimizer_kind

PAPER_GRID = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
ADAMW_SCALE = 1e-3          # the paper's AdamW runs use lrs about a thousand times smaller
SEARCH_EPOCHS = 3
SEARCH_TRAIN = 400
SEARCH_VAL = 200
MIN_EXAMPLES = 20           # below this a train/val split of the training data is meaningless


@dataclass
class LRSearch:
    """What ``find_base_lr`` tried: one row per candidate, the pick and the cost."""
    best: float
    rows: List[dict] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'base_lr':>9}  {'val acc':>7}  {'max loss / start':>16}", "-" * 36]
        for r in self.rows:
            mark = "  <- picked" if r["base_lr"] == self.best else ""
            lines.append(f"{r['base_lr']:>9.4g}  {r['val_acc']:>7.3f}  {r['loss_ratio']:>16.2f}{mark}")
        lines.append(f"search: {len(self.rows)} short runs, {self.seconds:.1f} s")
        return "\n".join(lines)


def search_grid(default: float, optimizer: str, span=(1 / 5, 5.0)) -> List[float]:
    """The paper's grid, extended down by powers of ten, between ``span[0]`` and ``span[1]`` x default.

    The default span (a fifth to five times) suits a quick search; the offline reference searches
    from a twentieth, so full fine-tuning of a 22M-parameter backbone reaches the small AdamW lrs it
    needs (its default of 2e-3 per 256 images was chosen on the 0.8M ``tiny-dino``).
    """
    scale = 1.0 if optimizer == "sgd" else ADAMW_SCALE
    full = [g * scale * 10.0 ** -k for k in range(5) for g in PAPER_GRID]
    lo, hi = default * span[0], default * span[1]
    grid = [round(g, 12) for g in full if lo * (1 - 1e-9) <= g <= hi * (1 + 1e-9)]
    return sorted(set(grid) or {default}, reverse=True)


def _split(train_data, val_data, seed: int):
    """(train subset, val subset) tensors-backed datasets for the short runs."""
    n = _length(train_data)
    g = torch.Generator().manual_seed(seed)
    if val_data is None:
        if n < MIN_EXAMPLES:
            raise ConfigError(f"base_lr='auto' needs a validation split, and train_data has only {n} examples "
                              f"(at least {MIN_EXAMPLES} are needed to hold out 20%); pass val_data or a number "
                              f"base_lr such as base_lr=1.0")
        order = torch.randperm(n, generator=g)
        k = max(1, n // 5)
        return _subset(train_data, order[k:][:SEARCH_TRAIN]), _subset(train_data, order[:k][:SEARCH_VAL])
    order = torch.randperm(n, generator=g)[:SEARCH_TRAIN]
    nv = _length(val_data)
    return _subset(train_data, order), _subset(val_data, torch.randperm(nv, generator=g)[:SEARCH_VAL])


def _subset(data, idx: torch.Tensor):
    t = _tensors(data)
    if t is None:
        return torch.utils.data.Subset(data, idx.tolist())
    return torch.utils.data.TensorDataset(t[0][idx], torch.as_tensor(t[1])[idx])


def search_base_lr(model: nn.Module, train_data, val_data, cfg: Optional[TrainConfig], fit: Callable, *,
                   grid: Optional[Sequence[float]] = None, progress: bool = False) -> LRSearch:
    """Pick ``base_lr`` for ``model`` by short runs scored on validation accuracy.

    ``vx.find_base_lr`` (``loop.py``) calls this with ``fit=vx.train``; it is a parameter so that this
    module never imports the loop that imports it.

    Args:
        model: the model to be trained (its trainable tensors are restored afterwards).
        train_data: the training set; at most ``SEARCH_TRAIN`` images of it are used.
        val_data: the validation set (paper: val200); ``None`` holds out 20% of ``train_data``.
        cfg: the TrainConfig of the final run (batch size, optimizer, weight decay, seed).
        fit: the training function, ``fit(model, train, val, cfg) -> History``.
        grid: candidate base lrs; default ``search_grid`` around the method's default.
        progress: print one line per candidate.

    Returns:
        An ``LRSearch`` with the pick, every candidate's score and the seconds it took.
    """
    cfg = cfg or TrainConfig()
    method = method_of(model)
    kind = optimizer_kind(cfg, method)
    if grid is None:
        grid = search_grid(default_base_lr(method, kind, getattr(model, "embed_dim", 128)), kind)
    tr, va = _split(train_data, val_data, cfg.seed)
    short = cfg.replace(base_lr=None, epochs=min(cfg.epochs, SEARCH_EPOCHS), progress=False, checkpoint=None,
                        batch_size=min(cfg.batch_size, len(tr)), warmup_epochs=min(cfg.warmup_epochs, 1.0))
    start, t0, rows = _trainable_state(model), time.time(), []
    for lr in grid:
        _load_trainable(model, start)
        with warnings.catch_warnings():  # spikes are expected for the large candidates; the table shows them
            warnings.simplefilter("ignore", RuntimeWarning)
            hist = fit(model, tr, va, short.replace(base_lr=float(lr)))
        losses = [s["loss"] for s in hist.steps]
        ratio = max(losses) / hist.loss_at_init if losses and all(map(math.isfinite, losses)) else math.inf
        rows.append({"base_lr": float(lr), "val_acc": hist.best_val_acc or 0.0, "loss_ratio": ratio,
                     "status": hist.status})
        if progress:
            print(f"  base_lr={lr:<8.4g} val {rows[-1]['val_acc']:.3f}  max loss/start {ratio:.2f}", flush=True)
    _load_trainable(model, start)
    calm = [r for r in rows if r["loss_ratio"] <= SPIKE and r["status"] == "completed"] or rows
    # best validation accuracy; ties go to the smaller (calmer) learning rate
    best = max(calm, key=lambda r: (round(r["val_acc"], 4), -r["base_lr"]))
    return LRSearch(best=best["base_lr"], rows=rows, seconds=time.time() - t0)

