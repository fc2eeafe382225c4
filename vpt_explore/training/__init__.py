"""Training: the loop (prepare -> epochs -> finish), the paper's recipe, batches and evaluation, and
experiments (sweeps over the VTAB protocol, paired tests)."""
from .batches import batches, cache_features, evaluate, head_only
from .loop import History, StopTraining, find_base_lr, train
from .recipe import (DEFAULT_BASE_LR, FALLBACK_BASE_LR, SGD_METHODS, autocast, default_base_lr, lr_at,
                     make_optimizer, resolve_device)

__all__ = ["batches", "cache_features", "evaluate", "head_only", "History", "StopTraining", "train", "find_base_lr",
           "DEFAULT_BASE_LR", "FALLBACK_BASE_LR", "SGD_METHODS", "autocast", "default_base_lr", "lr_at",
           "make_optimizer", "resolve_device"]
