"""Regenerate the offline reference: the paper's VTAB-1k protocol on every (task, method) cell.

    python -m vpt_explore reference [--tasks shapes-loc count ...] [--methods ...] [--seeds 3]

For each cell: ``base_lr="auto"`` picks the learning rate on train800 -> val200, then the method is
refit on train800val200 with each seed and tested on 500 images. Every finished cell is written to
``assets/offline_reference.json`` at once (atomically), so an interrupted regeneration resumes
where it stopped; cells made with another backbone (fingerprint) are discarded.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..analysis.reference.offline_runs import COMMAND, METHODS, REFERENCE_FILE, TASK_ORDER, offline
from ..backbones import DEFAULT_BACKBONE, fingerprint, load_backbone
from ..config import TrainConfig
from ..data.registry import load_task
from ..methods.factory import make_model
from .batches import evaluate
from .loop import find_base_lr, train

PROTOCOL = dict(epochs=10, batch_size=32, length=10, weight_decay=1e-4, search="base_lr='auto'",
                train="train800 -> val200 (search), train800val200 (refit)", test="test (500 images)")


def run_protocol(task: str, method: str, backbone, seeds: Sequence[int] = (0, 1, 2), progress: bool = True,
                 n: Optional[int] = None, epochs: Optional[int] = None) -> Dict:
    """One (task, method) cell: lr search on train -> val, refit on train+val per seed, test accuracy (%).

    Args:
        task, method: a task of ``list_tasks()`` and a method of ``make_model``.
        backbone: the frozen ViT.
        seeds: refit seeds.
        progress: print one line per seed.
        n, epochs: smaller splits / fewer epochs than ``PROTOCOL`` (smoke runs only).
    """
    t0 = time.time()
    splits = {s: load_task(task, s, backbone, n=n) for s in ("train", "val", "trainval", "test")}
    num_classes = splits["test"].num_classes
    kw = {"length": PROTOCOL["length"]} if method.startswith("vpt") else {}
    cfg = TrainConfig(epochs=epochs or PROTOCOL["epochs"], batch_size=min(PROTOCOL["batch_size"], n or 10 ** 9),
                      weight_decay=PROTOCOL["weight_decay"], progress=False)
    search = find_base_lr(make_model(method, backbone, num_classes, seed=0, **kw), splits["train"], splits["val"], cfg)
    accs, trainable = [], 0
    for seed in seeds:
        model = make_model(method, backbone, num_classes, seed=seed, **kw)
        hist = train(model, splits["trainval"], None, cfg.replace(base_lr=search.best, seed=seed))
        accs.append(100 * evaluate(model, splits["test"])["acc"])
        trainable = hist.trainable
        if progress:
            print(f"  {task:<12} {method:<12} seed {seed}: {accs[-1]:.1f}%  (base_lr {search.best:g}, "
                  f"{hist.status})", flush=True)
    return {"task": task, "method": method, "base_lr": search.best, "search": search.rows, "seeds": list(seeds),
            "test_acc": [round(a, 2) for a in accs], "mean": round(statistics.fmean(accs), 2),
            "sd": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0, "trainable": trainable,
            "search_seconds": round(search.seconds, 1), "seconds": round(time.time() - t0, 1)}


def _atomic_write_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def regenerate(backbone_name: Optional[str] = None, tasks: Sequence[str] = TASK_ORDER,
               methods: Sequence[str] = METHODS, seeds: int = 3, path: Optional[os.PathLike] = None) -> Dict:
    """Run every missing (task, method) cell and save after each; existing cells are kept (resume)."""
    import torch
    name = backbone_name or DEFAULT_BACKBONE
    path = Path(path or REFERENCE_FILE)
    vit = load_backbone(name)
    meta = {"backbone": name, "fingerprint": fingerprint(vit), "protocol": PROTOCOL, "seeds": list(range(seeds)),
            "command": COMMAND, "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                                          f"python {platform.python_version()}"}
    data = {"meta": meta, "cells": []}
    if path.exists():
        old = offline(path)
        if old["meta"].get("fingerprint") == meta["fingerprint"]:
            data["cells"] = old["cells"]
    done = {(c["task"], c["method"]) for c in data["cells"]}
    for task in tasks:
        for method in methods:
            if (task, method) in done:
                continue
            print(f"{task} / {method}", flush=True)
            data["cells"].append(run_protocol(task, method, vit, range(seeds)))
            _atomic_write_json(data, path)
    return data
