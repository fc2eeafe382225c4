"""Every ``vx.*`` name that existed before the package was split into layers still resolves, and
the old flat module names lead to the module that now holds their content."""
from __future__ import annotations

import importlib
import inspect
import types

import pytest

import vpt_explore as vx

EAGER = ["PromptConfig", "TrainConfig", "PromptedViT", "load_backbone", "list_backbones", "VPTError",
         "ConfigError", "DataError", "PromptFileError", "TrainingError", "MissingFileError",
         "MissingPackageError", "__version__"]
LAZY_NAMES = ["make_model", "METHODS", "PromptEnsemble", "total_params_multiplier", "storage_table", "train",
              "evaluate", "History", "load_model", "sweep", "wilcoxon", "welch", "Results", "list_tasks",
              "load_task", "register_vtab_folder", "load_vtab_folder", "load_fgvc_json", "TaskInfo", "load_torchvision_task",
              "PrefixViT", "MultiTaskVPT", "PromptedSwin", "InputPromptedModel", "PadPrompter",
              "FixedPatchPrompter", "RandomPatchPrompter", "ConvPadPrompter", "methods_for", "FrozenPrefix",
              "precomputed"]
OLD_MODULES = {  # vx.<old flat module>.<a name notebooks or users read there>
    "training": ["train", "evaluate", "make_optimizer", "lr_at", "default_base_lr", "resolve_device",
                 "DEFAULT_BASE_LR", "History"],
    "probes": ["record_attention", "cls_per_layer", "token_layout", "attention_to_prompts", "num_prompts_at"],
    "viz": ["plot_history", "plot_results_table", "collect_embeddings", "plot_embeddings", "attributions"],
    "widgets": ["TrainingLab", "training_lab"], "bench": ["run_infer", "run_train", "format_result"],
    "vit_math": ["patchify", "embed", "attention", "block", "vit_forward", "deep_forward"],
    "prefix": ["PrefixViT", "prefix_attention", "prompt_kv"], "multitask": ["MultiTaskVPT"],
    "attributions": ["attributions", "prompt_attributions"],
    "tasks": ["load_task", "list_tasks", "format_tasks_table", "load_torchvision_task", "TaskDataset"],
    "baselines": ["make_model", "METHODS", "Adapter", "PromptEnsemble", "storage_table"],
    "show": ["show_source"], "experiments": ["sweep", "Results"],
    "files": ["save_prompts", "read_prompt_file", "trained_state", "FORMAT"],
    "backbones": ["load_backbone", "data_config", "fingerprint", "BACKBONES"],
    "prompts": ["PromptedViT"], "config": ["PromptConfig", "TrainConfig", "LOCATIONS"],
}


@pytest.mark.parametrize("name", EAGER + LAZY_NAMES)
def test_name_resolves(name):
    assert getattr(vx, name) is not None
    assert name in dir(vx)


@pytest.mark.parametrize("module", sorted(OLD_MODULES))
def test_old_module_names_resolve(module):
    """Short module names resolve; the old ones among them say what to use instead, every time."""
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mod = getattr(vx, module)
        again = getattr(vx, module)
    assert isinstance(mod, types.ModuleType) and again is mod
    said = [str(w.message) for w in seen if issubclass(w.category, DeprecationWarning)]
    if module in vx._OLD:
        assert len(said) == 2 and f"vx.{module} is an old name of {mod.__name__}; use" in said[0]
    else:
        assert not said
    for attr in OLD_MODULES[module]:
        assert hasattr(mod, attr), f"vx.{module}.{attr}"


def test_every_lazy_name_is_pinned():
    assert set(vx._LAZY) >= set(LAZY_NAMES) | set(OLD_MODULES)


def test_public_objects_are_the_same_everywhere():
    assert vx.make_model is importlib.import_module("vpt_explore.methods").make_model \
        is importlib.import_module("vpt_explore.methods.factory").make_model
    assert vx.PromptedViT is importlib.import_module("vpt_explore.model.prompted").PromptedViT
    assert vx.evaluate is vx.training.evaluate
    assert vx.load_model is importlib.import_module("vpt_explore.methods.load").load_model


def test_type_checking_block_names_real_modules():
    """The editor-only imports in vpt_explore/__init__.py point at modules that exist."""
    src = inspect.getsource(vx)
    block = src.split("if TYPE_CHECKING:", 1)[1].split("__version__", 1)[0]
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("from ."):
            mod = line.split()[1]
            importlib.import_module(mod, "vpt_explore")


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vx.nope  # noqa: B018
