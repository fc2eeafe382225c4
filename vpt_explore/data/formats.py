"""Community data formats, for users with the real benchmarks on disk or a network connection.

* VTAB-1k folders: ``<root>/<task>/images/{train800,...}/*.jpg`` plus ``<root>/<task>/train800.txt``
  (and ``val200.txt``, ``train800val200.txt``, ``test.txt``), each line ``images/train800/000000.jpg 307``.
* FGVC JSON splits: ``<root>/{train,val,test}.json`` mapping relative image path -> class id.
* torchvision datasets under VTAB/FGVC names (``load_torchvision_task("cifar", root)``).

All return a :class:`vpt_explore.data.dataset.TaskDataset`. Every problem in the files is reported with
the file, the line and what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError, MissingFileError, bad_choice, did_you_mean, require_package
from .dataset import TaskDataset, TaskInfo, prepare_images, resolve_preprocess
from .protocol import canonical_split, check_subset_args, protocol_sizes, protocol_split, subset

PathLike = Union[str, Path]

# VTAB-1k task folder -> (VTAB group, number of classes); paper Sec. 4.1 / App. A.
VTAB_TASKS: Dict[str, Tuple[str, int]] = {
    "cifar": ("natural", 100), "caltech101": ("natural", 102), "dtd": ("natural", 47),
    "oxford_flowers102": ("natural", 102), "oxford_iiit_pet": ("natural", 37), "svhn": ("natural", 10),
    "sun397": ("natural", 397), "patch_camelyon": ("specialized", 2), "eurosat": ("specialized", 10),
    "resisc45": ("specialized", 45), "diabetic_retinopathy": ("specialized", 5),
    "clevr_count": ("structured", 8), "clevr_dist": ("structured", 6), "dmlab": ("structured", 6),
    "kitti": ("structured", 4), "dsprites_loc": ("structured", 16), "dsprites_ori": ("structured", 16),
    "smallnorb_azi": ("structured", 18), "smallnorb_ele": ("structured", 9),
}
VTAB_LISTS = {"train": "train800.txt", "val": "val200.txt", "trainval": "train800val200.txt",
              "test": "test.txt"}
FGVC_FILES = {"train": ("train.json",), "val": ("val.json",), "trainval": ("train.json", "val.json"),
              "test": ("test.json",)}


class Entry(NamedTuple):
    """One labelled image of a list file; ``where`` is ``file:line`` for error messages."""
    path: Path
    label: int
    where: str


# --------------------------------------------------------------------------- shared helpers
def _inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel``, refusing absolute paths and ``..`` that would leave ``root``."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise DataError(f"{where}: image path {rel!r} must be relative to {str(root)!r} and stay inside it")
    return root / rel


def read_image(path: Path, where: str) -> np.ndarray:
    """Decode one image as uint8 (H, W, 3), naming the list line that points to it on failure."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MissingFileError(f"image {str(path)!r} (listed at {where}) does not exist")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {str(path)!r} (listed at {where}): {e}") from None


def _check_label(label: int, num_classes: Optional[int], where: str, what: str) -> None:
    if label < 0 or (num_classes is not None and label >= num_classes):
        allowed = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{where}: label {label} is outside {allowed} for {what}")


def _dataset(entries: List[Entry], split: str, backbone, kw: dict, num_classes: int,
             info: TaskInfo) -> TaskDataset:
    """Subset, decode, resize and normalise the entries of one split."""
    labels = np.array([e.label for e in entries], dtype=np.int64)
    classes = [str(c) for c in range(num_classes)]
    keep = subset(labels, n=kw["n"], fraction=kw["fraction"], k_shot=kw["k_shot"], seed=kw["seed"],
                  classes=classes, split=split)
    pre = resolve_preprocess(backbone, kw["image_size"], kw["mean"], kw["std"])
    images = prepare_images([read_image(entries[i].path, entries[i].where) for i in keep], pre)
    return TaskDataset(images, torch.from_numpy(labels[keep]), name=info.name, split=split,
                       classes=classes, info=info)


def _options(image_size, mean, std, n, fraction, k_shot, seed) -> dict:
    check_subset_args(n, fraction, k_shot, seed)
    return dict(image_size=image_size, mean=mean, std=std, n=n, fraction=fraction, k_shot=k_shot, seed=seed)


# --------------------------------------------------------------------------- VTAB-1k folders
def read_vtab_list(list_path: Path, task_dir: Path, num_classes: Optional[int], task: str) -> List[Entry]:
    """Parse a VTAB list file (``<relative path> <label>`` per line) with file:line errors."""
    if not list_path.is_file():
        raise MissingFileError(f"VTAB list file {str(list_path)!r} does not exist "
                               f"(expected lines like 'images/train800/000000.jpg 307')")
    entries = []
    for lineno, line in enumerate(list_path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{list_path}:{lineno}"
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{where}: expected '<relative image path> <integer label>', got {line.strip()!r}")
        label = int(parts[1])
        _check_label(label, num_classes, where, f"VTAB task {task!r}"
                     + (f" ({num_classes} classes)" if num_classes is not None else ""))
        entries.append(Entry(_inside(task_dir, parts[0], where), label, where))
    if not entries:
        raise DataError(f"VTAB list file {str(list_path)!r} is empty")
    return entries


def find_vtab_tasks(root: PathLike) -> List[str]:
    """Names of the task folders under ``root`` that hold at least one VTAB list file."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"VTAB root folder {str(root)!r} does not exist")
    found = sorted(d.name for d in root.iterdir()
                   if d.is_dir() and any((d / f).is_file() for f in VTAB_LISTS.values()))
    if not found:
        raise MissingFileError(f"no VTAB-1k task folders under {str(root)!r}: expected "
                               f"<root>/<task>/train800.txt (and val200.txt, train800val200.txt, test.txt)")
    return found


def _vtab_num_classes(task_dir: Path, task: str) -> int:
    """Known VTAB class count, or 1 + the largest label in the task's list files."""
    if task in VTAB_TASKS:
        return VTAB_TASKS[task][1]
    labels = [e.label for f in VTAB_LISTS.values() if (task_dir / f).is_file()
              for e in read_vtab_list(task_dir / f, task_dir, None, task)]
    return max(labels, default=-1) + 1


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())


def vtab_folder_info(root: PathLike, task: str) -> TaskInfo:
    """The :class:`TaskInfo` of ``<root>/<task>`` (sizes counted from its list files)."""
    task_dir = Path(root) / task
    there = task_dir.is_dir()
    group, known = VTAB_TASKS.get(task, ("", None))
    num = known if known is not None or not there else _vtab_num_classes(task_dir, task)
    sizes = {s: _count_lines(task_dir / f) for s, f in VTAB_LISTS.items()} if there else {}
    return TaskInfo(f"vtab/{task}", "folder", num or 0, sizes, str(task_dir), there,
                    f"VTAB-1k {group + ' ' if group else '-style '}task {task!r} from a folder")


def load_vtab_folder(root: PathLike, task: str, split: str = "train", backbone=None, *, image_size=None,
                     mean=None, std=None, n: Optional[int] = None, fraction: Optional[float] = None,
                     k_shot: Optional[int] = None, seed: int = 0) -> TaskDataset:
    """Load one split of a VTAB-1k task folder (``train800``/``val200``/``train800val200``/``test``).

    Labels are checked against the task's class count (``VTAB_TASKS``; for other folder names,
    1 + the largest label found). Options as in :func:`vpt_explore.data.registry.load_task`.
    """
    split = canonical_split(split)
    kw = _options(image_size, mean, std, n, fraction, k_shot, seed)
    task_dir = Path(root) / task
    if not task_dir.is_dir():
        known = [d.name for d in Path(root).iterdir() if d.is_dir()] if Path(root).is_dir() else []
        raise MissingFileError(f"VTAB task folder {str(task_dir)!r} does not exist{did_you_mean(task, known)}; "
                               f"expected <root>/<task>/images/... and <root>/<task>/train800.txt")
    num_classes = _vtab_num_classes(task_dir, task)
    entries = read_vtab_list(task_dir / VTAB_LISTS[split], task_dir, num_classes, task)
    return _dataset(entries, split, backbone, kw, num_classes, vtab_folder_info(root, task))


# --------------------------------------------------------------------------- FGVC JSON
def _key_line(text: str, key: str) -> int:
    """The 1-based line where ``key`` appears as a JSON string (1 if not found)."""
    at = text.find(json.dumps(key, ensure_ascii=False))
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def read_fgvc_json(path: Path, num_classes: Optional[int] = None) -> List[Tuple[str, int, str]]:
    """Parse ``{"relative/path.jpg": class_id, ...}`` into (path, label, where) with file:line errors."""
    if not path.is_file():
        raise MissingFileError(f"FGVC split file {str(path)!r} does not exist "
                               f'(expected a JSON object like {{"images/0001.jpg": 3}})')
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}:1: expected a JSON object mapping image path -> class id, "
                        f"got a {type(data).__name__}")
    rows = []
    for rel, label in data.items():
        where = f"{path}:{_key_line(text, rel)}"
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{where}: class id of {rel!r} must be an integer, got {label!r}")
        _check_label(label, num_classes, where, f"{num_classes} classes" if num_classes else "an FGVC split")
        rows.append((rel, label, where))
    return rows


def _fgvc_image(root: Path, rel: str, where: str) -> Path:
    """Image paths are relative to ``root`` or, as in the VPT FGVC layout, to ``root/images``."""
    direct = _inside(root, rel, where)
    under = root / "images" / rel
    return under if not direct.is_file() and under.is_file() else direct


def load_fgvc_json(root: PathLike, split: str = "train", backbone=None, *, image_size=None, mean=None,
                   std=None, n: Optional[int] = None, fraction: Optional[float] = None,
                   k_shot: Optional[int] = None, seed: int = 0, num_classes: Optional[int] = None,
                   name: Optional[str] = None) -> TaskDataset:
    """Load one split of an FGVC-style folder: ``<root>/{train,val,test}.json`` (``trainval`` = both).

    ``num_classes`` defaults to 1 + the largest class id in all the JSON files present.
    """
    split = canonical_split(split)
    kw = _options(image_size, mean, std, n, fraction, k_shot, seed)
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"FGVC folder {str(root)!r} does not exist")
    if num_classes is None:
        present = [root / f for f in ("train.json", "val.json", "test.json") if (root / f).is_file()]
        num_classes = 1 + max((lab for p in present for _, lab, _ in read_fgvc_json(p)), default=-1)
    rows = [r for f in FGVC_FILES[split] for r in read_fgvc_json(root / f, num_classes)]
    entries = [Entry(_fgvc_image(root, rel, where), lab, where) for rel, lab, where in rows]
    sizes = {s: sum(_count_json(root / f) for f in files) for s, files in FGVC_FILES.items()}
    info = TaskInfo(f"fgvc/{name or root.name}", "folder", num_classes, sizes, str(root), True,
                    "FGVC-style JSON splits from a folder")
    return _dataset(entries, split, backbone, kw, num_classes, info)


def _count_json(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())) if path.is_file() else 0
    except (json.JSONDecodeError, TypeError):
        return 0


# --------------------------------------------------------------------------- torchvision
@dataclass(frozen=True)
class TorchvisionTask:
    """How a VTAB/FGVC name maps onto a ``torchvision.datasets`` class."""
    cls: str
    num_classes: int
    group: str
    splits: Optional[Dict[str, object]]  # our "train"/"test" -> constructor kwargs; None: one pool
    label_offset: int = 0


_FLAG = {"train": {"train": True}, "test": {"train": False}}
_TRAIN_TEST = {"train": {"split": "train"}, "test": {"split": "test"}}
TORCHVISION_TASKS: Dict[str, TorchvisionTask] = {
    "cifar": TorchvisionTask("CIFAR100", 100, "natural", _FLAG),
    "cifar100": TorchvisionTask("CIFAR100", 100, "natural", _FLAG),
    "cifar10": TorchvisionTask("CIFAR10", 10, "natural", _FLAG),
    "caltech101": TorchvisionTask("Caltech101", 101, "natural", None),  # no background class, unlike VTAB
    "dtd": TorchvisionTask("DTD", 47, "natural", _TRAIN_TEST),
    "oxford_flowers102": TorchvisionTask("Flowers102", 102, "natural", _TRAIN_TEST),
    "oxford_iiit_pet": TorchvisionTask("OxfordIIITPet", 37, "natural",
                                       {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "svhn": TorchvisionTask("SVHN", 10, "natural", _TRAIN_TEST),
    "sun397": TorchvisionTask("SUN397", 397, "natural", None),
    "patch_camelyon": TorchvisionTask("PCAM", 2, "specialized", _TRAIN_TEST),
    "eurosat": TorchvisionTask("EuroSAT", 10, "specialized", None),
    "clevr_count": TorchvisionTask("CLEVRClassification", 8, "structured",  # test has no labels: use val
                                   {"train": {"split": "train"}, "test": {"split": "val"}}, label_offset=-3),
    "stanford_cars": TorchvisionTask("StanfordCars", 196, "natural", _TRAIN_TEST),
    "fgvc_aircraft": TorchvisionTask("FGVCAircraft", 100, "natural",
                                     {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "food101": TorchvisionTask("Food101", 101, "natural", _TRAIN_TEST),
    "mnist": TorchvisionTask("MNIST", 10, "natural", _FLAG),
    "fashion-mnist": TorchvisionTask("FashionMNIST", 10, "upstream", _FLAG),
}


def _open_torchvision(spec: TorchvisionTask, root: Path, kwargs: dict, download: bool):
    tvd = require_package("torchvision.datasets", "torchvision", "load_torchvision_task")
    hint = "pass download=True when online, or point root at a folder that holds the files"
    if not download and not root.exists():
        raise MissingFileError(f"root {str(root)!r} does not exist, so torchvision.datasets.{spec.cls} "
                               f"cannot read it; {hint}")
    try:
        return getattr(tvd, spec.cls)(str(root), download=download, **kwargs)
    except (RuntimeError, FileNotFoundError) as e:
        raise MissingFileError(f"torchvision.datasets.{spec.cls} found no usable data under {str(root)!r} "
                               f"({e}); {hint}") from None


def _torchvision_labels(ds) -> np.ndarray:
    """All labels of a torchvision dataset without decoding images where the class allows it."""
    for attr in ("targets", "labels", "_labels", "y"):
        value = getattr(ds, attr, None)
        if value is not None and not callable(value):
            return np.asarray(value, dtype=np.int64)
    for attr in ("_samples", "samples", "imgs"):
        value = getattr(ds, attr, None)
        if value:
            return np.asarray([s[1] for s in value], dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def load_torchvision_task(name: str, root: PathLike, split: str = "train", backbone=None, *,
                          download: bool = False, image_size=None, mean=None, std=None,
                          n: Optional[int] = None, fraction: Optional[float] = None,
                          k_shot: Optional[int] = None, seed: int = 0,
                          test_size: Optional[int] = 500) -> TaskDataset:
    """A VTAB-1k-style split of a torchvision dataset, named as in VTAB/FGVC (``TORCHVISION_TASKS``).

    ``train``/``val`` (800/200) are drawn from the dataset's training split and ``test`` from its
    test split (``test_size`` images, ``None`` for all); datasets without splits are cut from one pool.
    Only the chosen images are decoded. Needs the files under ``root``, or ``download=True`` online.
    """
    if name not in TORCHVISION_TASKS:
        raise bad_choice("name", name, list(TORCHVISION_TASKS))
    split = canonical_split(split)
    check_subset_args(n, fraction, k_shot, seed)
    if test_size is not None and (isinstance(test_size, bool) or not isinstance(test_size, int)
                                  or test_size < 1):
        raise ConfigError(f"test_size={test_size!r} must be an integer >= 1 or None (all)")
    spec, root = TORCHVISION_TASKS[name], Path(root)
    if spec.splits is None:  # one pool: train, val and test are disjoint parts of it
        pool = test_pool = _open_torchvision(spec, root, {}, download)
        labels = test_labels = _torchvision_labels(pool) + spec.label_offset
        idx = protocol_split(labels, seed, test_size=test_size)
    else:
        pool = _open_torchvision(spec, root, spec.splits["train"], download)
        test_pool = _open_torchvision(spec, root, spec.splits["test"], download)
        labels = _torchvision_labels(pool) + spec.label_offset
        test_labels = _torchvision_labels(test_pool) + spec.label_offset
        idx = protocol_split(labels, seed, test_labels, test_size)
    chosen = ["train", "val"] if split == "trainval" else [split]
    items = [(test_pool if s == "test" else pool, int(i)) for s in chosen for i in idx[s]]
    y = np.concatenate([(test_labels if s == "test" else labels)[idx[s]] for s in chosen])
    bad = np.flatnonzero((y < 0) | (y >= spec.num_classes))
    if len(bad):
        raise DataError(f"torchvision.datasets.{spec.cls} item {items[bad[0]][1]} has label {y[bad[0]]}, "
                        f"outside [0, {spec.num_classes}) for {name!r}")
    classes = [str(c) for c in getattr(pool, "classes", [])] or [str(c) for c in range(spec.num_classes)]
    classes = classes if len(classes) == spec.num_classes else [str(c) for c in range(spec.num_classes)]
    keep = subset(y, n=n, fraction=fraction, k_shot=k_shot, seed=seed, classes=classes, split=split)
    pre = resolve_preprocess(backbone, image_size, mean, std)
    images = prepare_images([np.array(items[k][0][items[k][1]][0].convert("RGB")) for k in keep], pre)
    sizes = protocol_sizes(len(labels), None if spec.splits is None else len(test_labels), test_size)
    info = TaskInfo(f"torchvision/{name}", spec.group, spec.num_classes, sizes,
                    f"torchvision.datasets.{spec.cls} at {root}", True, f"{name} via torchvision ({spec.cls})")
    return TaskDataset(images, torch.from_numpy(y[keep].astype(np.int64)), name=info.name, split=split,
                       classes=classes, info=info)
