"""The training lab's snapping rules as one pure function: no widget, testable on plain dicts.

After the user changes one control, ``snap`` returns the slider limits to set, the values that must
follow so the panel always describes a valid run, and a sentence per change for the user. The
latest change wins: layers=shallow turns vpt-deep into vpt-shallow, concat-channel forces a
shallow, unshared setup, and location="add" snaps the length to 1 or the number of patches.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..config import PromptConfig, TrainConfig
from ..errors import ConfigError

MAX_LENGTH = 200  # the longest prompt the paper tries (Fig. 6: p in {1, 5, 10, 50, 100, 200})


def snap(values: Mapping[str, Any], name: str, old: Any = None, new: Any = None, *, depth: int,
         n_patches: int, task_size: Optional[int] = None) -> Tuple[Dict[str, Any], Dict[str, int], List[str]]:
    """Apply the lab's rules after control ``name`` changed from ``old`` to ``new``.

    Args:
        values: every control's value, after the change.
        name, old, new: the control the user changed and its value before / after.
        depth, n_patches: of the selected backbone (k <= depth; "add" needs length 1 or n_patches).
        task_size: the selected task's train split size (read when ``name == "task"``).

    Returns:
        ``(changes, limits, notes)``: the values to set, the slider maxima to set first (a lower
        maximum clamps the value, as a slider does), and one sentence per rule that changed something.
    """
    v, limits, notes = dict(values), {}, []

    def limit(control: str, maximum: int) -> None:
        limits[control] = maximum
        v[control] = min(v[control], maximum)
    if name == "backbone":
        limit("k", depth)
        limit("length", max(MAX_LENGTH, n_patches))
    if name == "task" and task_size is not None:
        if v["train_size"] > task_size:
            notes.append(f"train size {v['train_size']} > the {v['task']} train split; set to {task_size}")
        limit("train_size", max(8, task_size))
    notes += _method_and_layers(v, name)
    notes += _concat_channel(v, name)
    if v["location"] == "add" and v["length"] not in (1, n_patches):
        before = old if name == "length" else None
        up = before is not None and new > before
        snapped = n_patches if (up or before is None and v["length"] > n_patches / 2) else 1
        notes.append(f"location=add adds the prompt to each of the {n_patches} patch embeddings: "
                     f"length must be 1 or {n_patches}; set to {snapped}")
        v["length"] = snapped
    changes = {k: val for k, val in v.items() if k not in values or values[k] != val}
    return changes, limits, notes


def _method_and_layers(v: Dict[str, Any], name: str) -> List[str]:
    """vpt-shallow <-> layers "shallow": whichever the user touched last decides the other."""
    notes = []
    if name == "method" and v["method"] == "vpt-shallow" and v["layers"] != "shallow":
        v["layers"] = "shallow"
    if name == "method" and v["method"] == "vpt-deep" and v["layers"] == "shallow":
        v["layers"] = "deep"
    if name == "layers" and v["layers"] == "shallow" and v["method"] == "vpt-deep":
        v["method"] = "vpt-shallow"
        notes.append("layers=shallow is method vpt-shallow (prompts enter block 0 only, eqs. 4-6)")
    if name == "layers" and v["layers"] != "shallow" and v["method"] == "vpt-shallow":
        v["method"] = "vpt-deep"
        notes.append(f"layers={v['layers']} needs prompts in several blocks: method set to vpt-deep")
    return notes


def _concat_channel(v: Dict[str, Any], name: str) -> List[str]:
    """concat-channel adds input channels: shallow only, share "none"."""
    if v["location"] != "concat-channel" or (v["layers"] == "shallow" and v["share"] == "none"):
        return []
    if name == "location":
        v["layers"], v["share"] = "shallow", "none"
        if v["method"] == "vpt-deep":
            v["method"] = "vpt-shallow"
        return ["concat-channel adds input channels, so it is shallow only, with share=none"]
    v["location"] = "prepend"
    return ["concat-channel exists only at the input (shallow); location set to prepend"]


def run_config(values: Mapping[str, Any], *, kind: str, depth: int, task_size: int,
               options: Mapping[str, Any]) -> Tuple[str, PromptConfig, TrainConfig, str, str]:
    """The run the controls describe: (method, PromptConfig, TrainConfig, task, backbone).

    Args:
        values: every control's value (method, layers, k, length, location, share, pool, task,
            train_size, epochs, auto_lr, base_lr, device, backbone).
        kind: the method's prompts: ``"tokens"`` (VPT and friends), ``"pixel"`` (a prompter on the
            input image: only its width in pixels counts) or ``"none"``.
        depth: the backbone's number of blocks (first-k / last-k).
        task_size: the task's train split size.
        options: the lab's run options (batch_size, seed).

    Raises:
        VPTError: the controls describe an invalid run (PromptConfig and TrainConfig check their fields).
    """
    v, method = values, values["method"]
    if kind == "pixel":
        prompt = PromptConfig(length=v["length"], layers="shallow")
    elif kind == "tokens":
        k = min(v["k"], depth)
        layers = {"shallow": "shallow" if method == "vpt-shallow" else (0,), "deep": "deep",
                  "first-k": tuple(range(k)), "last-k": tuple(range(depth - k, depth))}[v["layers"]]
        prompt = PromptConfig(length=v["length"], layers=layers, location=v["location"], share=v["share"],
                              pool=v["pool"])
    else:
        prompt = PromptConfig(length=0)
    if v["train_size"] > task_size:
        raise ConfigError(f"train size={v['train_size']} is larger than the {v['task']!r} train split "
                          f"({task_size} images); choose at most {task_size}")
    tcfg = TrainConfig(epochs=v["epochs"], batch_size=min(options["batch_size"], v["train_size"]),
                       base_lr=None if v["auto_lr"] else float(v["base_lr"]), seed=options["seed"],
                       device=v["device"], progress=False, amp="auto", threads="auto")  # a busy lecture laptop
    return method, prompt, tcfg, v["task"], v["backbone"]
