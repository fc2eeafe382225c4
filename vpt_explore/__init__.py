"""vpt_explore: learn and explore Visual Prompt Tuning (Jia et al., ECCV 2022) on timm ViTs.

    import vpt_explore as vx
    vit = vx.load_backbone("dinov2-s14-offline", img_size=56)   # a real pretrained ViT-S, offline
    model = vx.PromptedViT(vit, vx.PromptConfig(length=10, layers="deep"), num_classes=10)

The package is layered like the flow above; imports only point down this list:
``errors, config -> data -> backbones -> model -> methods -> analysis -> training -> apps``.
Heavier parts (training, tasks, plots, widgets, benchmarks) are imported on first use.
"""
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

from .errors import check_core_versions

check_core_versions()  # reads package metadata only: one clear error for a too-old torch/timm/...

from .backbones.load import list_backbones, load_backbone  # noqa: E402 (after the version check)
from .config import PromptConfig, TrainConfig
from .errors import (ConfigError, DataError, MissingFileError, MissingPackageError, PromptFileError,
                     TrainingError, VPTError)
from .model.prompted import PromptedViT

if TYPE_CHECKING:  # lets editors jump from vx.X to its definition; nothing is imported at run time
    from . import config, errors
    from .analysis import attributions, probes, viz
    from .apps import bench, demo, show, widgets
    from .backbones import dinov2_onnx, load as backbones
    from .data import formats, registry as tasks, sources
    from .data.dataset import TaskInfo
    from .data.formats import load_fgvc_json, load_vtab_folder
    from .data.registry import list_tasks, load_task, register_vtab_folder
    from .methods import factory as baselines
    from .methods.cost import storage_table, total_params_multiplier
    from .methods.factory import METHODS, make_model
    from .methods.load import load_model
    from .methods.modules import PromptEnsemble
    from .methods.registry import MethodSpec, methods_for, parse_method, register_method
    from .model import multitask, prefix, prompt_file as files, prompted as prompts, vit_math
    from .model.multitask import MultiTaskVPT
    from .model.prefix import PrefixViT
    from .model.conv_prompts import ConvPadPrompter
    from .model.input_prompted import InputPromptedModel
    from .model.pixel_prompts import FixedPatchPrompter, PadPrompter, RandomPatchPrompter
    from .model.swin_prompts import PromptedSwin
    from .training import experiments, loop as training
    from .training.experiments import Results, sweep, welch, wilcoxon
    from .training.loop import History, evaluate, find_base_lr, train
    from .analysis import reference
    from .training import profiles
    from .training.profiles import PROFILES, Profile, resolve_profile, use_profile
    from .data.vtab_check import fgvc_split, validate_vtab_folder
    from .apps.reproduce import reproduce
    from .apps import precomputed
    from .model.frozen_prefix import FrozenPrefix

__version__ = "0.1.0"

# name -> (module, attribute); attribute None: the module itself. Resolved lazily so `import
# vpt_explore` stays light and side-effect free. Old flat module names (vx.tasks, vx.files, ...)
# still resolve, to the module that now holds their content, with a DeprecationWarning (_OLD).
_LAZY = {
    "make_model": ("methods.factory", "make_model"), "METHODS": ("methods.factory", "METHODS"),
    "PromptEnsemble": ("methods.modules", "PromptEnsemble"),
    "total_params_multiplier": ("methods.cost", "total_params_multiplier"),
    "storage_table": ("methods.cost", "storage_table"),
    "MethodSpec": ("methods.registry", "MethodSpec"), "parse_method": ("methods.registry", "parse_method"),
    "register_method": ("methods.registry", "register_method"),
    "methods_for": ("methods.registry", "methods_for"),
    "train": ("training.loop", "train"), "evaluate": ("training.batches", "evaluate"),
    "History": ("training.loop", "History"), "load_model": ("methods.load", "load_model"),
    "sweep": ("training.experiments", "sweep"), "wilcoxon": ("training.experiments", "wilcoxon"),
    "welch": ("training.experiments", "welch"), "Results": ("training.experiments", "Results"),
    "list_tasks": ("data.registry", "list_tasks"), "load_task": ("data.registry", "load_task"),
    "register_vtab_folder": ("data.registry", "register_vtab_folder"),
    "load_vtab_folder": ("data.formats", "load_vtab_folder"),
    "load_torchvision_task": ("data.formats", "load_torchvision_task"), "load_fgvc_json": ("data.formats", "load_fgvc_json"),
    "TaskInfo": ("data.dataset", "TaskInfo"),
    "PrefixViT": ("model.prefix", "PrefixViT"), "MultiTaskVPT": ("model.multitask", "MultiTaskVPT"),
    # beyond the plain ViT: Swin window prompts, input prompts on any backbone
    "PromptedSwin": ("model.swin_prompts", "PromptedSwin"),
    "InputPromptedModel": ("model.input_prompted", "InputPromptedModel"),
    "PadPrompter": ("model.pixel_prompts", "PadPrompter"),
    "FixedPatchPrompter": ("model.pixel_prompts", "FixedPatchPrompter"),
    "RandomPatchPrompter": ("model.pixel_prompts", "RandomPatchPrompter"),
    "ConvPadPrompter": ("model.conv_prompts", "ConvPadPrompter"),
    # modules, under their old flat names too
    "training": ("training", None), "probes": ("analysis.probes", None), "viz": ("analysis.viz", None),
    "widgets": ("apps.widgets", None), "bench": ("apps.bench", None), "vit_math": ("model.vit_math", None),
    "prefix": ("model.prefix", None), "multitask": ("model.multitask", None),
    "attributions": ("analysis.attributions", None), "tasks": ("data.registry", None),
    "baselines": ("methods", None), "show": ("apps.show", None), "experiments": ("training.experiments", None),
    "files": ("model.prompt_file", None), "backbones": ("backbones", None), "prompts": ("model.prompted", None),
    "config": ("config", None),
    # reference results, the learning-rate search, course profiles, VTAB/FGVC data checks
    "reference": ("analysis.reference", None), "find_base_lr": ("training.loop", "find_base_lr"),
    "profiles": ("training.profiles", None), "use_profile": ("training.profiles", "use_profile"),
    "resolve_profile": ("training.profiles", "resolve_profile"), "Profile": ("training.profiles", "Profile"),
    "PROFILES": ("training.profiles", "PROFILES"),
    "validate_vtab_folder": ("data.vtab_check", "validate_vtab_folder"),
    "fgvc_split": ("data.vtab_check", "fgvc_split"), "reproduce": ("apps.reproduce", "reproduce"),
    "precomputed": ("apps.precomputed", None), "FrozenPrefix": ("model.frozen_prefix", "FrozenPrefix"),
}

__all__ = ["PromptConfig", "TrainConfig", "PromptedViT", "load_backbone", "list_backbones",
           "VPTError", "ConfigError", "DataError", "PromptFileError", "TrainingError",
           "MissingFileError", "MissingPackageError", *_LAZY]


# old flat module names -> what to use now; each access warns
_OLD = {"tasks": "vx.load_task / vx.list_tasks, or vpt_explore.data.registry",
        "baselines": "vx.make_model / vx.METHODS, or vpt_explore.methods",
        "files": "model.save_prompts / vx.load_model, or vpt_explore.model.prompt_file",
        "prompts": "vx.PromptedViT, or vpt_explore.model.prompted",
        "show": "vpt_explore.apps.show", "experiments": "vx.sweep / vx.Results, or vpt_explore.training.experiments"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'vpt_explore' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attr is None else getattr(module, attr)
    if name in _OLD:  # not cached, so every use says it
        warnings.warn(f"vx.{name} is an old name of {module.__name__}; use {_OLD[name]}",
                      DeprecationWarning, stacklevel=2)
        return value
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
