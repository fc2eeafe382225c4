"""The VTAB-1k-like protocol (paper Sec. 4.1): split names, 800/200/500 sizes, stratified seeded
splits, and nested subsets (``n``, ``fraction``, ``k_shot``)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import ConfigError, bad_choice

SPLITS = ("train", "val", "trainval", "test")
SPLIT_ALIASES = {"train800": "train", "val200": "val", "train800val200": "trainval"}
PROTOCOL = {"train": 800, "val": 200, "test": 500}

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
