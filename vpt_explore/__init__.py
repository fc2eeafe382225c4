"""vpt_explore: learn and explore Visual Prompt Tuning (Jia et al., ECCV 2022) on timm ViTs.

    import vpt_explore as vx
    vit = vx.load_backbone("tiny")
    model = vx.PromptedViT(vit, vx.PromptConfig(length=10, layers="deep"), num_classes=10)

Heavier parts (training, tasks, plots, widgets, benchmarks) are imported on first use.
"""
from __future__ import annotations

import importlib

from .backbones import list_backbones, load_backbone
from .config import PromptConfig, TrainConfig
from .errors import (ConfigError, DataError, MissingFileError, MissingPackageError, PromptFileError,
                     TrainingError, VPTError)
from .prompts import PromptedViT

__version__ = "0.1.0"

# name -> module; resolved lazily so `import vpt_explore` stays light and side-effect free
_LAZY = {
    "make_model": "baselines", "METHODS": "baselines", "PromptEnsemble": "baselines",
    "total_params_multiplier": "baselines", "storage_table": "baselines",
    "train": "training", "evaluate": "training", "History": "training", "training": None, "load_model": "files",
    "sweep": "experiments", "wilcoxon": "experiments", "welch": "experiments", "Results": "experiments",
    "list_tasks": "tasks", "load_task": "tasks", "register_vtab_folder": "tasks",
    "load_vtab_folder": "tasks", "load_fgvc_json": "tasks", "TaskInfo": "tasks",
    "PrefixViT": "prefix", "MultiTaskVPT": "multitask",
    "probes": None, "viz": None, "widgets": None, "bench": None, "vit_math": None, "prefix": None,
    "multitask": None, "attributions": None, "tasks": None, "baselines": None, "show": None,
    "experiments": None, "files": None, "backbones": None, "prompts": None, "config": None,
}

__all__ = ["PromptConfig", "TrainConfig", "PromptedViT", "load_backbone", "list_backbones",
           "VPTError", "ConfigError", "DataError", "PromptFileError", "TrainingError",
           "MissingFileError", "MissingPackageError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'vpt_explore' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
