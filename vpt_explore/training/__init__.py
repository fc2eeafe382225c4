"""Training: the loop (prepare -> epochs -> finish), the paper's recipe, batches and evaluation, and
experiments (sweeps over the VTAB protocol, paired tests)."""
from .batches import batches, cache_features, evaluate, head_only
from .loop import History, StopTraining, train
from .recipe import (DEFAULT_BASE_LR, FALLBACK_BASE_LR, SGD_METHODS, autocast, default_base_lr, lr_at,
                     make_optimizer, resolve_device)

__all__ = ["batches", "cache_features", "evaluate", "head_only", "History", "StopTraining", "train",
           "DEFAULT_BASE_LR", "FALLBACK_BASE_LR", "SGD_METHODS", "autocast", "default_base_lr", "lr_at",
           "make_optimizer", "resolve_device"]
