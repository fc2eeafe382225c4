"""Regenerate an offline reference: the paper's VTAB-1k protocol on every (task, method) cell.

    python -m vpt_explore reference [--backbone dinov2-s14-offline --img-size 56] [--tasks ...] [--methods ...]

For each cell: ``base_lr="auto"`` picks the learning rate on train800 -> val200 (over the paper's grid
from a twentieth to five times the method's default), then the method is refit on train800val200
with each seed and tested on 500 images. The file (``vx.reference.reference_file(backbone, px)``)
is written atomically after every seed, so a regeneration killed at any point (the end of a
session, Ctrl-C) resumes at the seed it was running; results made with another backbone or
resolution (fingerprint) are never mixed in: the command refuses and says what to do.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from ..analysis.reference.offline_runs import (COMMAND, MAIN_BACKBONE, METHODS, TASK_ORDER, default_img_size,
                                               offline, reference_file)
from ..backbones import fingerprint, load_backbone
from ..backbones.weights import atomic_write_json
from ..config import TrainConfig
from ..data.registry import load_task
from ..errors import DataError
from ..methods.factory import make_model
from ..methods.registry import parse_method
from .batches import evaluate
from .loop import find_base_lr, train
from .lr_search import search_grid
from .recipe import default_base_lr, optimizer_kind, resolve_amp, resolve_device

SEARCH_SPAN = (1 / 20, 5.0)  # the lr grid: the paper's values from default/20 to 5 x default
PROTOCOL = dict(epochs=10, batch_size=32, length=10, weight_decay=1e-4,
                search="base_lr='auto' over the paper's grid from default/20 to 5x default",
                train="train800 -> val200 (search), train800val200 (refit)", test="test (500 images)")


def _grid(model, cfg: TrainConfig, method: str):
    kind = optimizer_kind(cfg, method)
    return search_grid(default_base_lr(method, kind, getattr(model, "embed_dim", 128)), kind, span=SEARCH_SPAN)


def run_protocol(task: str, method: str, backbone, seeds: Sequence[int] = (0, 1, 2), progress: bool = True,
                 n: Optional[int] = None, epochs: Optional[int] = None, amp: Optional[str] = None,
                 partial: Optional[Dict] = None, on_seed: Optional[Callable[[Dict], None]] = None) -> Dict:
    """One (task, method) cell: lr search on train -> val, refit on train+val per seed, test accuracy (%).

    Args:
        task, method: a task of ``list_tasks()`` and a method of ``make_model``.
        backbone: the frozen ViT.
        seeds: refit seeds.
        progress: print one line per seed.
        n, epochs: smaller splits / fewer epochs than ``PROTOCOL`` (smoke runs only).
        amp: the autocast of every run (``"auto"``: native bf16 where the CPU has it).
        partial: a cell this function returned through ``on_seed`` before being stopped: its lr
            search and finished seeds are kept, only the missing seeds run.
        on_seed: called with the cell so far after the search and after every seed (to save it).
    """
    t0 = time.time()
    splits = {s: load_task(task, s, backbone, n=n) for s in ("train", "val", "trainval", "test")}
    num_classes = splits["test"].num_classes
    kw = {"length": PROTOCOL["length"]} if parse_method(method)[0].has_prompts else {}
    cfg = TrainConfig(epochs=epochs or PROTOCOL["epochs"], batch_size=min(PROTOCOL["batch_size"], n or 10 ** 9),
                      weight_decay=PROTOCOL["weight_decay"], progress=False, amp=amp)
    out = dict(partial or {})
    if "base_lr" not in out:
        model = make_model(method, backbone, num_classes, seed=0, **kw)
        search = find_base_lr(model, splits["train"], splits["val"], cfg, grid=_grid(model, cfg, method))
        out = {"task": task, "method": method, "base_lr": search.best, "search": search.rows,
               "search_seconds": round(search.seconds, 1), "seeds": [], "test_acc": [], "seconds": 0.0}
        out["seconds"] = round(time.time() - t0, 1)
        if on_seed:
            on_seed(out)
    for seed in seeds:
        if seed in out["seeds"]:
            continue
        t_seed = time.time()
        model = make_model(method, backbone, num_classes, seed=seed, **kw)
        hist = train(model, splits["trainval"], None, cfg.replace(base_lr=out["base_lr"], seed=seed))
        acc = 100 * evaluate(model, splits["test"])["acc"]
        out["seeds"] = out["seeds"] + [seed]
        out["test_acc"] = out["test_acc"] + [round(acc, 2)]
        out.update(trainable=hist.trainable, amp=hist.amp, images_per_s=round(hist.images_per_s or 0.0, 1),
                   seconds=round(out["seconds"] + time.time() - t_seed, 1))
        if progress:
            print(f"  {task:<12} {method:<12} seed {seed}: {acc:.1f}%  (base_lr {out['base_lr']:g}, "
                  f"{hist.status}, {out['images_per_s']:.0f} img/s)", flush=True)
        if on_seed and len(out["seeds"]) < len(seeds):
            on_seed(out)
    accs = out["test_acc"]
    out.update(mean=round(statistics.fmean(accs), 2), sd=round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0)
    return out


def regenerate(backbone_name: Optional[str] = None, tasks: Sequence[str] = TASK_ORDER,
               methods: Sequence[str] = METHODS, seeds: int = 3, path: Optional[os.PathLike] = None,
               img_size: Optional[int] = None, amp: Optional[str] = "auto", threads=None) -> Dict:
    """Run every missing (task, method) cell, saving after every seed; existing cells are kept (resume).

    Args:
        backbone_name, img_size: the backbone (default: the offline reference's, DINOv2-S/14 at 56 px).
        tasks, methods, seeds: what to run (cells already in the file are skipped).
        path: the reference file (default ``reference_file(backbone_name, img_size)`` in the package).
        amp: autocast of every run (``"auto"``: native bf16 where the CPU has it, else fp32).
        threads: torch CPU threads (``None``: torch's default; ``"auto"``: the cores that are free now).

    Raises:
        DataError: the file holds results of another backbone, resolution or AMP setting.
    """
    import torch
    from .threads import apply_threads
    name = backbone_name or MAIN_BACKBONE
    img_size = img_size or default_img_size(name)
    path = Path(path or reference_file(name, img_size))
    apply_threads(threads)
    vit = load_backbone(name, img_size=img_size) if name.startswith("dinov2") else load_backbone(name)
    amp_used = resolve_amp(amp, resolve_device("auto"))[0]
    meta = {"backbone": name, "img_size": img_size, "fingerprint": fingerprint(vit), "protocol": PROTOCOL,
            "seeds": list(range(seeds)), "amp": amp_used,
            "command": f"{COMMAND} --backbone {name} --img-size {img_size}",
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, python {platform.python_version()}"}
    data = {"meta": meta, "cells": [], "partial": {}}
    if path.exists():
        old = offline(path)
        for key in ("fingerprint", "img_size", "amp"):
            if old["meta"].get(key, meta[key]) != meta[key]:
                raise DataError(f"{str(path)!r} holds results made with {key}={old['meta'].get(key)!r}, this run "
                                f"would use {meta[key]!r} (backbone {name!r} at {img_size} px); write to another "
                                f"file with --out, or delete that file to start over")
        data["cells"], data["partial"] = old["cells"], old.get("partial", {})
    done = {(c["task"], c["method"]) for c in data["cells"]}
    for task in tasks:
        for method in methods:
            if (task, method) in done:
                continue
            key = f"{task}|{method}"
            print(f"{task} / {method}" + (" (resuming)" if key in data["partial"] else ""), flush=True)

            def save_partial(cell: Dict, key: str = key) -> None:
                data["partial"][key] = cell
                atomic_write_json(data, path)

            cell = run_protocol(task, method, vit, range(seeds), amp=amp, partial=data["partial"].get(key),
                                on_seed=save_partial)
            data["partial"].pop(key, None)
            data["cells"].append(cell)
            atomic_write_json(data, path)
    return data
