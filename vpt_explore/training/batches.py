"""Batches from any dataset, evaluation, and the frozen-feature cache (linear probes in seconds)."""
from __future__ import annotations

from typing import Dict, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError


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


def batches(data, batch_size: int, shuffle: bool = False, generator=None, num_workers: int = 0) -> Iterable:
    """Yield (images, labels) batches from a Dataset, TensorDataset-like object or DataLoader.

    In-memory data is indexed directly; ``num_workers > 0`` (``TrainConfig.num_workers``) reads any
    Dataset through a DataLoader with that many worker processes (for data decoded from disk).
    """
    if isinstance(data, torch.utils.data.DataLoader):
        yield from data
        return
    t = _tensors(data) if num_workers == 0 else None
    if t is not None:
        x, y = t
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for k in range(0, len(x), batch_size):
            idx = order[k:k + batch_size]
            yield x[idx], y[idx]
        return
    yield from torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                           num_workers=num_workers)


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



def head_only(model: nn.Module) -> bool:
    """True when only ``head.*`` trains and features are deterministic, so they can be cached."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    no_dropout = getattr(getattr(model, "prompt_dropout", None), "p", 0.0) == 0.0
    return bool(names) and all(k.startswith("head.") for k in names) and no_dropout and \
        hasattr(model, "forward_features") and hasattr(model, "forward_head")


@torch.no_grad()
def cache_features(model: nn.Module, data, batch_size: int, device,
                   num_workers: int = 0) -> torch.utils.data.TensorDataset:
    """Run the frozen part once: a TensorDataset of (features (N, D), labels (N,))."""
    model.eval()
    feats, labels = [], []
    for x, y in batches(data, batch_size, num_workers=num_workers):
        feats.append(model.forward_features(x.to(device)).float())
        labels.append(torch.as_tensor(y).to(device))
    return torch.utils.data.TensorDataset(torch.cat(feats), torch.cat(labels))


def _trainable_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.named_parameters() if v.requires_grad}


def _load_trainable(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
