"""The offline suite's own reference results: the file, its cells, and the verdict on a new run.

The numbers in ``assets/reference_<backbone>_<px>px.json`` come from ``python -m vpt_explore
reference`` (``training/reference_runs.py``): the paper's VTAB-1k protocol at laptop size (lr picked
on train800 -> val200 by ``base_lr="auto"``, refit on train800val200 with 3 seeds, test accuracy on
500 images), mean and sd over the seeds. Two ship: the course's, on DINOv2-S/14 at 56 px (the
``"cpu"`` profile; ``REFERENCE_FILE``), and the 0.8M ``tiny-dino``'s (``SMALL_REFERENCE_FILE``), which
the scale lesson sets beside it. Every function takes ``path=`` to read another one.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ...errors import DataError, MissingFileError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
# The offline reference the course compares with (the "cpu" profile's backbone and resolution), and
# the small backbone's, which the scale lesson sets beside it.
MAIN_BACKBONE, MAIN_IMG_SIZE = "dinov2-s14-offline", 56
SMALL_BACKBONE, SMALL_IMG_SIZE = "tiny-dino", 32


def default_img_size(backbone: str) -> int:
    """The resolution a reference of ``backbone`` is made at (the shipped ones: 56 px and 32 px)."""
    return MAIN_IMG_SIZE if backbone == MAIN_BACKBONE else 32 if backbone in ("tiny", "tiny-dino") else 224


def reference_file(backbone: str = MAIN_BACKBONE, img_size: Optional[int] = None) -> Path:
    """Where the reference of ``backbone`` at ``img_size`` px lives in the package."""
    return ASSETS / f"reference_{backbone}_{img_size or default_img_size(backbone)}px.json"


REFERENCE_FILE = reference_file(MAIN_BACKBONE, MAIN_IMG_SIZE)
SMALL_REFERENCE_FILE = reference_file(SMALL_BACKBONE, SMALL_IMG_SIZE)
METHODS = ("linear", "mlp-3", "bias", "adapter", "vpt-shallow", "vpt-deep", "full")
# structured tasks first: they are where the paper's VPT effects are largest
TASK_ORDER = ("shapes-loc", "count", "textures", "mnist", "dist", "shapes-ori", "modality", "animal-mnist",
              "digits", "faces")
COMMAND = "python -m vpt_explore reference --seeds 3"
HEADLINE = ("linear", "vpt-shallow", "vpt-deep", "full")  # run first; the other three may follow


def offline(path: Optional[os.PathLike] = None) -> Dict:
    """The shipped offline reference: ``{"meta": {...}, "cells": [{task, method, mean, sd, test_acc, ...}]}``."""
    path = Path(path or REFERENCE_FILE)
    if not path.exists():
        raise MissingFileError(f"offline reference file {str(path)!r} does not exist; regenerate it with "
                               f"`{COMMAND}`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"offline reference file {str(path)!r} is corrupt (not JSON: {e}); restore it from git "
                        f"or regenerate it with `{COMMAND}`") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or "meta" not in data:
        raise DataError(f"offline reference file {str(path)!r} lacks 'meta' and 'cells'; restore it from git or "
                        f"regenerate it with `{COMMAND}`")
    for i, c in enumerate(data["cells"]):
        missing = {"task", "method", "mean", "sd", "test_acc"} - set(c)
        if missing:
            raise DataError(f"offline reference file {str(path)!r}: cell {i} lacks {sorted(missing)}")
    return data


def cell(task: str, method: str, path: Optional[os.PathLike] = None) -> Optional[Dict]:
    """The reference cell of (task, method), or None when it has not been run yet."""
    for c in offline(path)["cells"]:
        if c["task"] == task and c["method"] == method:
            return c
    return None


def tuned_lr(task: str, method: str, path: Optional[os.PathLike] = None):
    """The base_lr that ``base_lr="auto"`` picked for (task, method) when the reference was made, else ``"auto"``.

    The reference's search ran on the same splits and sizes a ``"cpu"``-profile run uses, so a
    notebook can reuse its pick instead of searching again; a missing cell or reference file gives
    ``"auto"`` (search now).
    """
    from ...errors import VPTError
    try:
        found = cell(task, method, path)
    except VPTError:
        found = None
    return found["base_lr"] if found and found.get("base_lr") is not None else "auto"


def complete_tasks(path: Optional[os.PathLike] = None) -> List[str]:
    """The tasks on which every method in the file has been run (group means use only these)."""
    return _complete(offline(path)["cells"])


def _complete(cells: List[Dict]) -> List[str]:
    done = {(c["task"], c["method"]) for c in cells}
    methods = {m for _, m in done}  # a regeneration in progress: the methods run so far
    return [t for t in TASK_ORDER if methods and all((t, m) in done for m in methods)]


def group_means(path: Optional[os.PathLike] = None) -> Dict[str, Dict[str, float]]:
    """{method: {group: mean over the group's complete tasks}} of the offline reference.

    Only tasks on which every method in the file has been run count, so two methods' means always cover the
    same tasks and their difference is a fair comparison.
    """
    from ...data.registry import list_tasks
    group = {t.name: t.group for t in list_tasks()}
    cells = offline(path)["cells"]  # read once
    done = set(_complete(cells))
    acc: Dict[str, Dict[str, List[float]]] = {}
    for c in cells:
        if c["task"] in done:
            acc.setdefault(c["method"], {}).setdefault(group.get(c["task"], "?"), []).append(c["mean"])
    return {m: {g: round(statistics.fmean(v), 2) for g, v in gs.items()} for m, gs in acc.items()}


def verdict(mine: Sequence[float], ref: Dict) -> str:
    """'within' when the mean of ``mine`` (%) lies inside the reference mean +- max(2 sd, 2 points)."""
    mean = statistics.fmean(mine)
    band = max(2 * ref["sd"], 2.0)
    return "within" if abs(mean - ref["mean"]) <= band else ("above" if mean > ref["mean"] else "below")
