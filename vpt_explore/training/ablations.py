"""Notebook 09's ablations as data: one ``Ablation`` per run, the plan of sections 1-7, and a
resumable file of their results (paper Sec. 4.3, App. B: Figs. 3, 5-8, 12, 13).

    plan = ablation_plan(length=10, lengths=(1, 5, 10, 50), num_patches=16, depth=12, num_classes=8)
    model = build_ablation(plan[0], vit, num_classes=8, train_set=train_set, seed=0)

Every run trains one model on one task with one seed: an ablation shows a direction, which a
second seed has to confirm before it means something (the README's "Read single ablation rows
with care" has a run where one row differs from its neighbours by 30 points). ``python -m vpt_explore ablations`` trains the whole plan at the ``"cpu"`` profile's
VTAB-1k sizes and writes ``assets/ablations_<backbone>_<size>px.json``; notebook 09 shows that
file in the ``"cpu"`` profile and retrains the rows a student picks.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import PromptConfig
from ..methods.registry import parse_method

SECTIONS = ("location", "length", "depth", "pool", "share", "init", "data")


@dataclass(frozen=True)
class Ablation:
    """One run of an ablation.

    Attributes:
        section: one of ``SECTIONS``.
        label: the row's name in the notebook's table.
        method: the method whose learning rate it uses (``vpt-shallow``, ``vpt-deep``, ``linear``,
            ``full``); with ``prompt`` empty the model is ``make_model(method, ...)``.
        prompt: PromptConfig fields, as sorted (name, value) pairs, of a PromptedViT built directly.
        fraction: the share of the training split it trains on (Fig. 3).
    """
    section: str
    label: str
    method: str = "vpt-deep"
    prompt: Tuple[Tuple[str, Any], ...] = ()
    fraction: float = 1.0

    @property
    def key(self) -> str:
        """What the run trains, independent of its section and label: equal keys train the same
        model (PromptConfig fields at their default value are left out)."""
        fields = dict(self.prompt)
        if self.section != "data":
            default, given = PromptConfig().to_dict(), PromptConfig(**fields).to_dict()
            fields = {k: v for k, v in given.items() if v != default[k]}
        return f"{self.method}|" + ",".join(f"{k}={v}" for k, v in sorted(fields.items())) + f"|{self.fraction:g}"


def prompted_ablation(section: str, label: str, layers="deep", method: Optional[str] = None, **kw) -> Ablation:
    """A row that trains a PromptedViT with ``layers`` and PromptConfig fields ``kw`` (length, ...);
    VPT-deep gets the paper's prompt dropout 0.1, VPT-shallow none; ``method``: whose lr it uses."""
    fields = {"layers": layers, "dropout": 0.0 if layers == "shallow" else 0.1, **kw}
    method = method or ("vpt-shallow" if layers == "shallow" else "vpt-deep")
    return Ablation(section, label, method, tuple(sorted(fields.items())))


def ablation_plan(length: int, lengths: Sequence[int], num_patches: int, depth: int, num_classes: int,
                  fractions: Sequence[float] = (0.1, 0.5, 1.0),
                  scale_methods: Sequence[str] = ("linear", "vpt-deep", "full")) -> Tuple[Ablation, ...]:
    """Sections 1-7 of notebook 09, in order.

    Args:
        length: the default prompt length p.
        lengths: the lengths of the Fig. 6 sweep.
        num_patches: m, the prompt length of location "add" (one vector per patch).
        depth: N, the number of blocks (Fig. 7 compares the early and the late half).
        num_classes: C, the prompt length of the [CLS]-prototype init (Fig. 13).
        fractions: shares of the training split for the data-scale section (Fig. 3).
        scale_methods: the methods of the data-scale section.
    """
    L, half = length, depth // 2
    plan: List[Ablation] = []
    for loc, p in (("prepend", L), ("add", num_patches), ("prepend-pixel", L), ("concat-channel", 3)):
        plan.append(prompted_ablation("location", f"{loc} (p={p})", "shallow", location=loc, length=p))
    plan += [prompted_ablation("length", f"deep p={p}", length=p) for p in lengths]
    plan += [prompted_ablation("depth", f"layers={layers}", layers, length=L)
             for layers in ("shallow", tuple(range(half)), tuple(range(half, depth)), "deep")]
    plan += [prompted_ablation("pool", f"pool={pool}", length=L, pool=pool) for pool in ("cls", "image", "prompt", "global")]
    plan += [prompted_ablation("share", f"share={share}", length=L, share=share) for share in ("none", "intra", "inter", "all")]
    plan += [prompted_ablation("init", f"init={init} (p={num_classes})", length=num_classes, init=init)
             for init in ("random", "cls")]
    plan += [Ablation("data", f"{method} {100 * f:g}%", method, (("length", L),) if parse_method(method)[0].has_prompts
                      else (), f) for f in fractions for method in scale_methods]
    return tuple(plan)


def build_ablation(a: Ablation, vit, num_classes: int, train_set=None, seed: int = 0):
    """The model of one run on the shared frozen ``vit``: a PromptedViT built from ``a.prompt``, or
    ``make_model(a.method, ...)`` for the data-scale rows (``train_set``: the [CLS]-init data)."""
    from ..methods.factory import make_model
    from ..model.prompted import PromptedViT
    fields = dict(a.prompt)
    if a.section == "data":
        return make_model(a.method, vit, num_classes, seed=seed, **fields)
    cfg = PromptConfig(**fields)
    return PromptedViT(vit, cfg, num_classes=num_classes, seed=seed,
                       init_data=train_set if cfg.init == "cls" else None)


def ablations_file(backbone: str, img_size: int) -> Path:
    """The shipped results of the plan for a backbone and input size."""
    return Path(__file__).resolve().parents[1] / "assets" / f"ablations_{backbone}_{img_size}px.json"


def load_ablations(path: os.PathLike) -> Dict[str, Any]:
    """A results file: ``{"meta": {...}, "runs": {key: row}}`` (empty when the file is missing)."""
    import json
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"meta": {}, "runs": {}}


def run_plan(plan: Sequence[Ablation], fit: Callable[[Ablation], Dict[str, Any]], path: os.PathLike,
             meta: Dict[str, Any], progress: bool = True) -> Dict[str, Any]:
    """Train every run of ``plan`` not yet in the file at ``path``, saving after each (resumable).

    ``fit(a)`` trains one run and returns its row (``accuracy``, ``trainable``, ``seconds``,
    ``base_lr``, ``status``). Runs with the same ``key`` train once. A file made with other
    ``meta`` (backbone, size, protocol) is refused rather than mixed.
    """
    from ..backbones.weights import atomic_write_json
    from ..errors import DataError
    data = load_ablations(path)
    if data["runs"] and data["meta"] != meta:
        raise DataError(f"{str(path)!r} holds ablations of another setup ({data['meta']}); this run is "
                        f"{meta}. Write to another --out file, or delete it to start over")
    data["meta"] = meta
    todo = [a for a in {a.key: a for a in plan}.values() if a.key not in data["runs"]]
    for n, a in enumerate(todo, 1):
        t0 = time.time()
        row = fit(a)
        data["runs"][a.key] = dict(row, seconds=round(time.time() - t0, 1))
        atomic_write_json(data, path)
        if progress:
            print(f"[{n}/{len(todo)}] {a.section:<9} {a.label:<28} test acc {100 * row['accuracy']:5.1f}%  "
                  f"({row['status']}, {time.time() - t0:.0f} s)", flush=True)
    return data


def rows_for(plan: Sequence[Ablation], data: Dict[str, Any], section: str, task: str) -> List[Dict[str, Any]]:
    """The rows of one section for ``vx.viz.plot_results_table``, from a results file's runs."""
    return [{"method": a.label, "task": task, "accuracy": data["runs"][a.key]["accuracy"],
             "trainable": data["runs"][a.key]["trainable"]}
            for a in plan if a.section == section and a.key in data["runs"]]
