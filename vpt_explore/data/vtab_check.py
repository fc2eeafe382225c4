"""Data for the paper's setting: check a VTAB-1k folder, name its copy, write FGVC splits.

* ``validate_vtab_folder(root, task)``: the community VTAB-1k layout (``<root>/<task>/images/...``
  plus ``train800.txt``, ``val200.txt``, ``train800val200.txt``, ``test.txt``, lines
  ``images/train800/000000.jpg 307``): split sizes 800 / 200 / 1000 / any, ``train800val200`` equal
  to ``train800`` + ``val200``, class ids within the task's class count, every listed image present
  and readable, no unlisted files. Problems name the file, the line and the fix.
* ``manifest`` / ``identify_copy``: a sha256 per file and a digest per split, matched against
  known copies (``assets/vtab_manifests.json``), since VTAB-1k circulates in several copies.
* ``fgvc_split``: a seeded, deterministic, stratified train/val split of an official train list,
  written as the FGVC JSON files ``train.json`` / ``val.json`` / ``test.json`` (path -> class id).

Nothing here needs TensorFlow or the network.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .formats import VTAB_TASKS
from ..errors import ConfigError, DataError, MissingFileError, bad_choice

PathLike = Union[str, Path]
# VTAB-1k task folder -> number of classes (paper Sec. 4.1 / App. A).
VTAB_CLASSES: Dict[str, int] = {task: n for task, (_, n) in VTAB_TASKS.items()}  # formats.VTAB_TASKS is the table
VTAB_SPLITS: Dict[str, Optional[int]] = {"train800": 800, "val200": 200, "train800val200": 1000, "test": None}
KNOWN_MANIFESTS = Path(__file__).parent / "assets" / "vtab_manifests.json"
MANIFEST_FORMAT = "vpt_explore-vtab-manifest/1"
SHOW = 5  # problems of one kind listed before "... and N more"


@dataclass(frozen=True)
class Row:
    """One ``path label`` line; ``where`` is ``file:line`` for messages."""
    rel: str
    label: int
    where: str


@dataclass(frozen=True)
class TaskReport:
    """What ``validate_vtab_folder`` found for one task folder."""
    task: str
    folder: str
    num_classes: int
    counts: Mapping[str, int]
    classes_seen: Mapping[str, int]
    image_sizes: Mapping[str, int]
    images_checked: int
    problems: Tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        sizes = ", ".join(f"{k} x{n}" for k, n in Counter(self.image_sizes).most_common(3)) or "not checked"
        head = (f"{self.task}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}; splits "
                + ", ".join(f"{s} {n}" for s, n in self.counts.items())
                + f"; {self.num_classes} classes; image sizes {sizes} ({self.images_checked} checked)")
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


@dataclass(frozen=True)
class Report:
    """The result of ``validate_vtab_folder``: one ``TaskReport`` per task folder checked."""
    root: str
    tasks: Tuple[TaskReport, ...]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks)

    @property
    def problems(self) -> Tuple[str, ...]:
        return tuple(p for t in self.tasks for p in t.problems)

    def __getitem__(self, task: str) -> TaskReport:
        for t in self.tasks:
            if t.task == task:
                return t
        raise bad_choice("task", task, [t.task for t in self.tasks], KeyError)

    def __str__(self) -> str:
        return f"VTAB-1k folder {self.root}\n" + "\n".join(str(t) for t in self.tasks)

    def raise_if_problems(self) -> "Report":
        """Raise ``DataError`` listing every problem; return self when there are none."""
        if not self.ok:
            raise DataError(f"the VTAB-1k folder {self.root!r} has {len(self.problems)} problem(s):\n"
                            + "\n".join(f"  - {p}" for p in self.problems))
        return self


def _listed(items: Sequence[str], what: str, fix: str) -> str:
    more = f" ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return f"{len(items)} {what}: {'; '.join(items[:SHOW])}{more}; fix: {fix}"


def read_label_list(path: PathLike) -> Tuple[List[Row], List[str]]:
    """Parse ``<relative path> <integer label>`` lines; returns the rows and ``file:line`` problems."""
    path = Path(path)
    rows, problems = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where, parts = f"{path}:{n}", line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            problems.append(f"{where}: expected '<relative image path> <integer label>', got {line.strip()!r}")
        elif Path(parts[0]).is_absolute() or ".." in Path(parts[0]).parts:
            problems.append(f"{where}: image path {parts[0]!r} must be relative and stay inside the folder")
        else:
            rows.append(Row(parts[0], int(parts[1]), where))
    return rows, problems


def _task_classes(task: str, num_classes: Optional[int]) -> int:
    if num_classes is not None:
        return num_classes
    if task not in VTAB_CLASSES:
        err = bad_choice("task", task, list(VTAB_CLASSES))
        raise ConfigError(f"{err}; for a task outside VTAB-1k pass num_classes=") from None
    return VTAB_CLASSES[task]


def _check_rows(split: str, rows: List[Row], folder: Path, num_classes: int, task: str) -> List[str]:
    expected, problems = VTAB_SPLITS[split], []
    if expected is not None and len(rows) != expected:
        problems.append(f"{folder / (split + '.txt')}: {len(rows)} images listed, VTAB-1k's {split} has "
                        f"{expected}; fix: copy the task folder again from a complete VTAB-1k copy")
    if expected is None and not rows:
        problems.append(f"{folder / 'test.txt'}: no images listed; fix: copy the task folder again")
    bad = [f"{r.where} label {r.label}" for r in rows if not 0 <= r.label < num_classes]
    if bad:
        problems.append(_listed(bad, f"class ids outside [0, {num_classes}) for {task!r} ({num_classes} "
                                     "classes)", "labels are 0-based class ids; is this another task's list?"))
    first: Dict[str, str] = {}
    dup = []
    for r in rows:
        if r.rel in first:
            dup.append(f"{r.where} repeats {first[r.rel]}")
        first.setdefault(r.rel, r.where)
    if dup:
        problems.append(_listed(dup, "duplicate lines", "list each image once"))
    missing = [f"{r.where} {r.rel}" for r in rows if not (folder / r.rel).is_file()]
    if missing:
        problems.append(_listed(missing, "listed images do not exist", "copy the missing images from the "
                                                                      "same VTAB-1k copy, or re-copy the folder"))
    return problems


def sha256_file(path: PathLike) -> str:
    """The sha256 hex digest of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_union(lists: Dict[str, List[Row]], folder: Path) -> List[str]:
    """``train800val200`` must hold exactly the (image, label) pairs of ``train800`` + ``val200``."""
    if not all(s in lists for s in ("train800", "val200", "train800val200")):
        return []
    parts = lists["train800"] + lists["val200"]
    if Counter((r.rel, r.label) for r in parts) == Counter((r.rel, r.label) for r in lists["train800val200"]):
        return []

    def keyed(rows: List[Row]) -> Counter:  # copies with their own images/train800val200/ folder
        return Counter((sha256_file(folder / r.rel) if (folder / r.rel).is_file() else r.rel, r.label)
                       for r in rows)
    extra = keyed(lists["train800val200"]) - keyed(parts)
    if not extra:
        return []
    return [f"{folder / 'train800val200.txt'}: {sum(extra.values())} (image, label) pairs are not in "
            f"train800.txt + val200.txt; fix: rebuild it as the two lists concatenated"]


def _extra_files(folder: Path, lists: Dict[str, List[Row]]) -> List[str]:
    listed = {Path(r.rel).as_posix() for rows in lists.values() for r in rows}
    images = folder / "images"
    found = sorted(p.relative_to(folder).as_posix() for p in images.rglob("*") if p.is_file()) \
        if images.is_dir() else []
    extra = [f for f in found if f not in listed]
    return [_listed(extra, f"files under {images} are in no list", "delete them, or add each to the "
                                                                    "matching list file")] if extra else []


def _check_images(folder: Path, rows: List[Row], images: Union[str, int], seed: int,
                  progress: bool) -> Tuple[Counter, int, List[str]]:
    """Open a sample (``images`` per split, ``"all"`` or ``0``) of the listed images with PIL."""
    import numpy as np
    from PIL import Image

    rows = [r for r in rows if (folder / r.rel).is_file()]
    if images != "all":
        k = min(int(images), len(rows))
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), k, replace=False))]
    if progress and rows:
        from tqdm.auto import tqdm
        rows = tqdm(rows, desc=f"checking {folder.name} images", leave=False)
    sizes, problems = Counter(), []
    for r in rows:
        try:
            with Image.open(folder / r.rel) as im:
                im.load()
                sizes[f"{im.size[0]}x{im.size[1]}"] += 1
        except Exception as e:  # PIL raises many types for broken files
            problems.append(f"{r.where} {r.rel}: {type(e).__name__}: {e}")
    fix = "re-copy these images; they are truncated or not images"
    return sizes, len(rows), [_listed(problems, "images cannot be read", fix)] if problems else []


def _check_task(folder: Path, task: str, num_classes: Optional[int], images: Union[str, int], seed: int,
                progress: bool) -> TaskReport:
    classes = _task_classes(task, num_classes)
    lists, problems = {}, []
    for split in VTAB_SPLITS:
        path = folder / f"{split}.txt"
        if not path.is_file():
            problems.append(f"{path}: missing; fix: copy it from the same VTAB-1k copy (lines like "
                            f"'images/{split}/000000.jpg 3')")
            continue
        rows, bad = read_label_list(path)
        lists[split] = rows
        problems += bad + _check_rows(split, rows, folder, classes, task)
    problems += _check_union(lists, folder) + _extra_files(folder, lists)
    sizes, checked = Counter(), 0
    if images not in (0, "none"):
        for split, rows in lists.items():
            s, n, bad = _check_images(folder, rows, images, seed, progress)
            sizes, checked, problems = sizes + s, checked + n, problems + bad
    return TaskReport(task, str(folder), classes, {s: len(r) for s, r in lists.items()},
                      {s: len({r.label for r in rows}) for s, rows in lists.items()}, dict(sizes), checked,
                      tuple(problems))


def validate_vtab_folder(root: PathLike, task: Optional[str] = None, *, num_classes: Optional[int] = None,
                         images: Union[str, int] = 16, seed: int = 0, progress: bool = False,
                         strict: bool = True) -> Report:
    """Check a VTAB-1k folder in the community layout (see the module docstring).

    Args:
        root: the VTAB-1k root (holding ``<task>/`` folders) or one task folder.
        task: the task folder to check; ``None`` checks every task folder under ``root``.
        num_classes: the class count for a task outside the 19 VTAB-1k tasks.
        images: how many listed images per split to open with PIL, ``"all"``, or ``0``.
        seed: which images the sample picks.
        progress: show a progress bar while opening images.
        strict: raise ``DataError`` listing every problem (``False``: return them in the report).

    Raises:
        MissingFileError: ``root`` (or ``root/task``) is not a folder, or holds no task folder.
        ConfigError: an unknown task name without ``num_classes``.
        DataError: with ``strict``, any problem found (file, line and fix for each).
    """
    root = Path(root)
    if task is None and (root / "train800.txt").is_file():
        root, task = root.parent, root.name
    if not root.is_dir():
        raise MissingFileError(f"VTAB-1k root {str(root)!r} is not a folder; fix: pass the folder that "
                               f"holds <task>/train800.txt (e.g. set VPT_VTAB_ROOT)")
    names = [task] if task is not None else sorted(
        d.name for d in root.iterdir() if d.is_dir() and any((d / f"{s}.txt").is_file() for s in VTAB_SPLITS))
    if not names:
        raise MissingFileError(f"no VTAB-1k task folders under {str(root)!r}: expected <root>/<task>/"
                               f"train800.txt, val200.txt, train800val200.txt and test.txt")
    for name in names:
        if not (root / name).is_dir():
            raise MissingFileError(f"task folder {str(root / name)!r} does not exist; tasks here: "
                                   f"{sorted(d.name for d in root.iterdir() if d.is_dir())}")
    report = Report(str(root), tuple(_check_task(root / n, n, num_classes, images, seed, progress)
                                     for n in names))
    return report.raise_if_problems() if strict else report


# --------------------------------------------------------------------------- which copy is it?
def manifest(root: PathLike, task: str) -> dict:
    """sha256 of every file in ``<root>/<task>`` and one digest per split (list lines + image hashes)."""
    folder = Path(root) / task
    if not folder.is_dir():
        raise MissingFileError(f"task folder {str(folder)!r} does not exist")
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    splits = {}
    for split in VTAB_SPLITS:
        if (folder / f"{split}.txt").is_file():
            rows, _ = read_label_list(folder / f"{split}.txt")
            lines = sorted(f"{r.rel} {r.label} {files.get(Path(r.rel).as_posix(), 'missing')}" for r in rows)
            splits[split] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"format": MANIFEST_FORMAT, "task": task, "files": files, "splits": splits}


def load_known_manifests(path: Optional[PathLike] = None) -> dict:
    """``{"format": ..., "copies": {copy name: {task: manifest}}}``; the shipped file by default."""
    path = Path(path) if path is not None else KNOWN_MANIFESTS
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "copies": {}}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("copies"), dict):
        raise DataError(f"{path}: expected {{'format': ..., 'copies': {{name: {{task: manifest}}}}}}")
    return data


def identify_copy(root: PathLike, task: str, known_manifests: Union[None, PathLike, Mapping] = None
                  ) -> Optional[str]:
    """The name of the known copy whose manifest for ``task`` matches this folder, else ``None``.

    A known manifest matches when every split digest it records (or, without split digests,
    every file hash) equals this folder's.
    """
    known = known_manifests if isinstance(known_manifests, Mapping) else load_known_manifests(known_manifests)
    ours = manifest(root, task)
    for name, tasks in sorted(known.get("copies", {}).items()):
        theirs = tasks.get(task)
        if not theirs:
            continue
        key = "splits" if theirs.get("splits") else "files"
        if theirs.get(key) and all(ours[key].get(k) == v for k, v in theirs[key].items()):
            return name
    return None


# --------------------------------------------------------------------------- FGVC splits
def _as_rows(items: Union[PathLike, Iterable[Union[Row, Tuple[str, int]]]], what: str) -> List[Row]:
    if isinstance(items, (str, Path)):
        if not Path(items).is_file():
            raise MissingFileError(f"{what} list {str(items)!r} does not exist")
        rows, problems = read_label_list(items)
        if problems:
            raise DataError(_listed(problems, f"bad lines in {items}", "one '<path> <label>' per line"))
        return rows
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, Row):
            rows.append(item)
            continue
        rel, label = item
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{what}[{i}]: label {label!r} of {rel!r} must be an integer")
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DataError(f"{what}[{i}]: image path {rel!r} must be relative and stay inside root")
        rows.append(Row(str(rel), label, f"{what}[{i}]"))
    return rows


def read_cub_lists(cub_root: PathLike) -> Tuple[List[Row], List[Row]]:
    """CUB-200-2011's official split (``images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``).

    Paths are relative to ``<cub_root>/images``; labels are made 0-based.
    """
    cub_root = Path(cub_root)

    def table(name: str) -> Dict[str, Tuple[str, str]]:
        path = cub_root / name
        if not path.is_file():
            raise MissingFileError(f"CUB file {str(path)!r} does not exist; pass the CUB_200_2011 folder")
        out = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: expected '<image id> <value>', got {line!r}")
            out[parts[0]] = (parts[1], f"{path}:{n}")
        return out
    images, is_train, labels = table("images.txt"), table("train_test_split.txt"), table("image_class_labels.txt")
    train, test = [], []
    for image_id, (rel, where) in images.items():
        if image_id not in is_train or image_id not in labels:
            raise DataError(f"{where}: image id {image_id} is missing from train_test_split.txt or "
                            f"image_class_labels.txt")
        row = Row(rel, int(labels[image_id][0]) - 1, where)
        (train if is_train[image_id][0] == "1" else test).append(row)
    return train, test


def stratified_val(rows: Sequence[Row], val_fraction: float = 0.1, seed: int = 0) -> Tuple[List[Row], List[Row]]:
    """Split ``rows`` into (train, val), per class, seeded; independent of the input order.

    Each class gives ``round(val_fraction * n)`` images to val (at most ``n - 1``).
    """
    import numpy as np

    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction!r} must be a number in [0, 1), e.g. 0.1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")
    by_class: Dict[int, List[Row]] = {}
    for r in sorted(rows, key=lambda r: r.rel):
        by_class.setdefault(r.label, []).append(r)
    train, val = [], []
    for label, items in sorted(by_class.items()):
        k = min(len(items) - 1, math.floor(val_fraction * len(items) + 0.5))
        order = np.random.default_rng([seed, label]).permutation(len(items))
        val += [items[i] for i in sorted(order[:k])]
        train += [items[i] for i in sorted(order[k:])]
    return train, val


def _write_json(path: Path, rows: List[Row]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({r.rel: r.label for r in sorted(rows, key=lambda r: r.rel)}, indent=0) + "\n")
    os.replace(tmp, path)


def fgvc_split(train_list: Union[PathLike, Iterable[Tuple[str, int]]],
               test_list: Union[PathLike, Iterable[Tuple[str, int]]], root: PathLike,
               val_fraction: float = 0.1, seed: int = 0, *, out_dir: Optional[PathLike] = None,
               overwrite: bool = False) -> Dict[str, Path]:
    """Write ``train.json`` / ``val.json`` / ``test.json`` from official train/test lists.

    Args:
        train_list: a ``<path> <label>`` list file, or ``(path, label)`` pairs; paths relative to ``root``.
        test_list: the same for the official test split.
        root: the folder the image paths are relative to; every listed image must exist.
        val_fraction: share of each class of the official train split that goes to val.
        seed: the same seed and lists always give the same split.
        out_dir: where the JSON files go: ``root`` (the default) or a folder above it (keys then
            start with the path from ``out_dir`` to ``root``, except for an ``images/`` folder).
        overwrite: replace existing JSON files.

    Returns:
        ``{"train": path, "val": path, "test": path}``.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"image root {str(root)!r} is not a folder")
    out, prefix = _out_dir(root, out_dir)
    train, test = _as_rows(train_list, "train"), _as_rows(test_list, "test")
    for rows in (train, test):
        bad = [f"{r.where} label {r.label}" for r in rows if r.label < 0]
        missing = [f"{r.where} {r.rel}" for r in rows if not (root / r.rel).is_file()]
        if bad:
            raise DataError(_listed(bad, "negative class ids", "labels are 0-based class ids"))
        if missing:
            raise MissingFileError(_listed(missing, f"listed images do not exist under {root}",
                                           "pass the folder the list paths are relative to as root"))
    both = sorted({r.rel for r in train} & {r.rel for r in test})
    if both:
        raise DataError(_listed(both, "images are in both the train and the test list", "fix the lists"))
    tr, val = stratified_val(train, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {s: out / f"{s}.json" for s in ("train", "val", "test")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing} already exist(s); pass overwrite=True to replace them")
    for split, rows in (("train", tr), ("val", val), ("test", test)):
        _write_json(paths[split], [Row(prefix + r.rel, r.label, r.where) for r in rows])
    return paths


def _out_dir(root: Path, out_dir: Optional[PathLike]) -> Tuple[Path, str]:
    """The JSON folder and the prefix that makes image paths relative to it (the loader reads them
    from the JSON's folder, or from its ``images/`` subfolder as in the VPT layout)."""
    out = Path(out_dir) if out_dir is not None else root
    try:
        inner = root.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"out_dir={str(out)!r} must be root {str(root)!r} or a folder above it: the FGVC "
                          f"loader finds images relative to the JSON files' folder") from None
    return out, "" if inner in (".", "images") else inner + "/"


def fgvc_split_cub(cub_root: PathLike, val_fraction: float = 0.1, seed: int = 0, *,
                   overwrite: bool = False) -> Dict[str, Path]:
    """``fgvc_split`` for CUB-200-2011: JSON files in ``cub_root``, paths relative to ``cub_root/images``."""
    train, test = read_cub_lists(cub_root)
    return fgvc_split(train, test, Path(cub_root) / "images", val_fraction, seed,
                      out_dir=cub_root, overwrite=overwrite)
