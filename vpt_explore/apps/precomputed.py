"""Trained models that ship, so a lecture shows notebooks 07 and 08 in seconds (``PRECOMPUTED``).

    python -m vpt_explore precompute            # retrain and save them (about 15 min on 2 cores)
    model, info = vx.precomputed.load("shapes-loc", "vpt-deep")

Each is a prompt file (``model/prompt_file.py``: safetensors, only what the method trained, tied to
its backbone by a fingerprint) trained at the ``"cpu"`` profile's sizes on its backbone (DINOv2-S/14
at 56 px): 800 training + 200 validation images, 10 epochs, seed 0, at the learning rate the offline
reference's search picked (``vx.reference.tuned_lr``; a search where it has none). A VPT-deep set at
p=10 is 12 x 10 x 384 = 46,080 numbers plus the head. Full fine-tuning (22M numbers) does not ship.
The file's metadata records the test accuracy, lr, sizes and the command, which the notebooks print.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from torch import nn

from ..analysis.reference.offline_runs import ASSETS, REFERENCE_FILE, tuned_lr
from ..errors import MissingFileError, bad_choice

FOLDER = ASSETS / "precomputed"
COMMAND = "python -m vpt_explore precompute"
# what notebooks 07 ([CLS] maps, the natural task) and 08 (attention, the structured task) show
MODELS: Tuple[Tuple[str, str], ...] = (("natural", "linear"), ("natural", "vpt-shallow"), ("natural", "vpt-deep"),
                                       ("structured", "linear"), ("structured", "vpt-deep"))


def _profile():
    from ..training.profiles import PROFILES
    return PROFILES["cpu"]


def path_for(task: str, method: str) -> Path:
    """The shipped file of (task, method) on the ``"cpu"`` profile's backbone."""
    p = _profile()
    return FOLDER / f"{task}_{method}_{p.backbone}_{p.img_size}px.safetensors"


def available() -> Dict[Tuple[str, str], Path]:
    """{(task, method): path} of the shipped files."""
    p = _profile()
    out = {}
    for role, method in MODELS:
        path = path_for(p.task(role), method)
        if path.exists():
            out[(p.task(role), method)] = path
    return out


def backbone() -> nn.Module:
    """The backbone the shipped models were trained on (the ``"cpu"`` profile's)."""
    return _profile().load_backbone()


def load(task: str, method: str, vit: Optional[nn.Module] = None) -> Tuple[nn.Module, Dict[str, str]]:
    """The shipped model of (task, method) in eval mode, and its metadata (test_acc, base_lr, ...).

    Args:
        task, method: one of ``MODELS`` (with the ``"cpu"`` profile's task for each role).
        vit: the backbone to load it onto (default ``backbone()``); another backbone or resolution
            is refused by the file's fingerprint, with a message naming both.

    Raises:
        ConfigError: a (task, method) that does not ship.
        MissingFileError: the file is missing (rebuild it with ``python -m vpt_explore precompute``).
        PromptFileError: ``vit`` is not the backbone the file was trained on.
    """
    from ..methods.load import load_model
    from ..model.prompt_file import read_prompt_file
    shipped = [(_profile().task(r), m) for r, m in MODELS]
    if (task, method) not in shipped:
        raise bad_choice("(task, method)", (task, method), shipped)
    path = path_for(task, method)
    if not path.exists():
        raise MissingFileError(f"the precomputed model {str(path)!r} is missing; rebuild it with `{COMMAND}`")
    model = load_model(path, vit if vit is not None else backbone())
    return model, read_prompt_file(path)[1]


def build(models: Sequence[Tuple[str, str]] = MODELS, progress: bool = True) -> Dict[Tuple[str, str], Path]:
    """Train and save the shipped models (``python -m vpt_explore precompute``); returns their paths."""
    from ..config import TrainConfig
    from ..data.registry import load_task
    from ..methods.factory import make_model
    from ..methods.registry import parse_method
    from ..model.prompt_file import save_prompts
    from ..training.batches import evaluate
    from ..training.loop import train
    p = _profile()
    vit = p.load_backbone()
    FOLDER.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, method in models:
        task = p.task(role)
        t0 = time.time()
        splits = {s: load_task(task, s, vit, n=n) for s, n in (("train", p.n_train), ("val", p.n_val),
                                                               ("test", p.n_test))}
        kw = {"length": p.prompt_length} if parse_method(method)[0].has_prompts else {}
        model = make_model(method, vit, splits["train"].num_classes, seed=0, **kw)
        lr = tuned_lr(task, method, REFERENCE_FILE)
        cfg = TrainConfig(**{**p.train_kwargs(), "base_lr": lr}, seed=0, progress=progress)
        hist = train(model, splits["train"], splits["val"], cfg)
        acc = evaluate(model, splits["test"])["acc"]
        extra = {"task": task, "test_acc": f"{acc:.4f}", "base_lr": f"{hist.base_lr:g}",
                 "lr_from": "offline reference" if lr != "auto" else "base_lr='auto' search",
                 "n_train": p.n_train, "n_val": p.n_val, "n_test": p.n_test, "epochs": p.epochs,
                 "img_size": p.img_size, "amp": hist.amp, "seed": 0, "command": COMMAND}
        out[(task, method)] = save_prompts(model, path_for(task, method), extra=extra)
        print(f"{task:<12} {method:<12} test {100 * acc:.1f}%  base_lr {hist.base_lr:g}  "
              f"({time.time() - t0:.0f} s) -> {out[(task, method)].name}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description="retrain the models notebooks 07 and 08 show "
                                                           "with PRECOMPUTED = True")
    ap.add_argument("--only", nargs="+", default=None, metavar="TASK:METHOD",
                    help="e.g. shapes-loc:vpt-deep (default: all of them)")
    a = ap.parse_args(argv)
    p = _profile()
    everything = [(p.task(r), m) for r, m in MODELS]
    chosen = MODELS
    if a.only:
        chosen = []
        for item in a.only:
            task, _, method = item.partition(":")
            if (task, method) not in everything:
                raise bad_choice("--only", item, [f"{t}:{m}" for t, m in everything])
            chosen.append(MODELS[everything.index((task, method))])
    build(chosen)
    return 0
