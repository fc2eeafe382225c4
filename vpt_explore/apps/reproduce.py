"""``python -m vpt_explore reproduce`` and ``reference``: check one run against the offline reference.

    python -m vpt_explore reproduce --task shapes-loc --method vpt-deep [--seeds 3]

runs the reference protocol (``training/reference_runs.py``) for one cell and says whether its mean
lies within the reference's spread (mean +- max(2 sd, 2 points)); when it does not, it lists the
likely causes it can check: another backbone, another learning rate, fewer seeds, other splits.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from ..analysis.reference.offline_runs import (COMMAND, MAIN_BACKBONE, METHODS, TASK_ORDER, cell, default_img_size,
                                               offline, reference_file, verdict)
from ..backbones import backbone_name, fingerprint, load_backbone
from ..data.registry import list_tasks
from ..errors import ConfigError, bad_choice
from ..training.reference_runs import regenerate, run_protocol


def _causes(vit, ref: Dict, result: Dict, seeds: int, path=None) -> List[str]:
    """The likely causes ``reproduce`` can check when a result is outside the reference's spread."""
    meta = offline(path)["meta"]
    causes = []
    if backbone_name(vit) != meta["backbone"] or fingerprint(vit) != meta["fingerprint"]:
        causes.append(f"backbone: the reference used {meta['backbone']!r} (fingerprint {meta['fingerprint'][:8]}), "
                      f"this run {backbone_name(vit)!r} ({fingerprint(vit)[:8]})")
    if result.get("amp") != meta.get("amp"):
        causes.append(f"autocast: the reference ran with amp={meta.get('amp')!r}, this run with {result.get('amp')!r}")
    if not math.isclose(result["base_lr"], ref["base_lr"], rel_tol=1e-6):
        causes.append(f"learning rate: the search picked base_lr={result['base_lr']:g} here and "
                      f"{ref['base_lr']:g} for the reference")
    if seeds < len(ref["test_acc"]):
        causes.append(f"seed spread: {seeds} seed(s) here vs {len(ref['test_acc'])} in the reference "
                      f"(reference sd {ref['sd']:.1f})")
    causes.append("split sizes and versions: the reference used " + json.dumps(meta["protocol"]) +
                  f" on {meta['machine']}")
    return causes


def reproduce(task: str, method: str, seeds: int = 3, backbone: Optional[str] = None, amp: Optional[str] = "auto",
              reuse_lr: bool = False) -> Dict:
    """Run the reference protocol for one cell and compare it with the shipped reference of that backbone.

    Args:
        task, method, seeds: the cell and how many refit seeds.
        backbone: default the offline reference's (DINOv2-S/14 at 56 px); ``"tiny-dino"`` compares
            with the small backbone's reference.
        amp: autocast of the runs (``None``: fp32; the reference used ``"auto"``, bf16 here).
        reuse_lr: skip the lr search and refit at the reference's lr (isolates, e.g., fp32 vs bf16).
    """
    names = [t.name for t in list_tasks()]
    if task not in names:
        raise bad_choice("task", task, names)
    if method not in METHODS:
        raise bad_choice("method", method, METHODS)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r} must be an integer >= 1")
    name = backbone or MAIN_BACKBONE
    path = reference_file(name)
    ref = cell(task, method, path) if path.exists() else None
    vit = load_backbone(name, img_size=default_img_size(name)) if name.startswith("dinov2") else load_backbone(name)
    partial = None
    if reuse_lr:
        if ref is None:
            raise ConfigError(f"reuse_lr=True needs the reference cell ({task}, {method}) of {name!r}, which has "
                              f"not been run; run without reuse_lr (the lr is searched)")
        partial = {"task": task, "method": method, "base_lr": ref["base_lr"], "search": [], "seeds": [],
                   "test_acc": [], "seconds": 0.0}
    result = run_protocol(task, method, vit, range(seeds), amp=amp, partial=partial)
    out = {"result": result, "reference": ref, "verdict": None, "causes": []}
    if ref is None:
        print(f"{task} / {method}: {result['mean']:.1f} +- {result['sd']:.1f}; no reference cell yet "
              f"(regenerate with `{COMMAND} --tasks {task} --methods {method}`)")
        return out
    out["verdict"] = verdict(result["test_acc"], ref)
    print(f"{task} / {method}: yours {result['mean']:.1f} +- {result['sd']:.1f} vs reference "
          f"{ref['mean']:.1f} +- {ref['sd']:.1f} -> {out['verdict']} the reference's spread "
          f"(mean +- max(2 sd, 2 points))")
    if out["verdict"] != "within":
        out["causes"] = _causes(vit, ref, result, seeds, path)
        print("likely causes to check:\n" + "\n".join(f"  - {c}" for c in out["causes"]))
    return out


def main_reference(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore reference",
                                 description="regenerate the offline reference (resumable)")
    ap.add_argument("--tasks", nargs="+", default=list(TASK_ORDER))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbone", default=None, help="default: the offline reference's, dinov2-s14-offline")
    ap.add_argument("--img-size", type=int, default=None, help="default: 56 for DINOv2, 32 for the tiny ones")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                    help="autocast; auto: native bf16 where the CPU has it, else fp32")
    ap.add_argument("--threads", default=None, help="torch CPU threads: an integer or 'auto' (the free cores)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="print the README block of the shipped reference; run nothing")
    ap.add_argument("--update-readme", type=Path, default=None, metavar="README",
                    help="rewrite the README's two generated blocks (DINOv2-S and tiny-dino references); run nothing")
    a = ap.parse_args(argv)
    if a.update_readme:
        import re
        from ..analysis.reference.findings import readme_block
        from ..analysis.reference.offline_runs import SMALL_REFERENCE_FILE
        text = a.update_readme.read_text()
        for marker, path in (("reference", None), ("small-reference", SMALL_REFERENCE_FILE)):
            pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(\n?<!-- {marker}:end -->)", re.S)
            if not pattern.search(text):
                raise ConfigError(f"--update-readme={str(a.update_readme)!r} has no <!-- {marker}:start --> ... "
                                  f"<!-- {marker}:end --> block")
            block = readme_block(path)
            text = pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2).lstrip("\n"), text)
        a.update_readme.write_text(text)
        print(f"updated the reference blocks of {a.update_readme}")
        return 0
    if a.markdown:
        from ..analysis.reference.findings import readme_block
        print(readme_block(a.out))
        return 0
    names = [t.name for t in list_tasks()]
    for t in a.tasks:
        if t not in names:
            raise bad_choice("--tasks", t, names)
    for m in a.methods:
        if m not in METHODS:
            raise bad_choice("--methods", m, METHODS)
    threads = None if a.threads is None else a.threads if a.threads == "auto" else int(a.threads)
    regenerate(a.backbone, a.tasks, a.methods, a.seeds, a.out, img_size=a.img_size,
               amp=None if a.amp == "none" else a.amp, threads=threads)
    return 0


def main_reproduce(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore reproduce",
                                 description="run the reference protocol for one task and method and compare")
    ap.add_argument("--task", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbone", default=None, help="default: dinov2-s14-offline (at 56 px); or tiny-dino")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"], help="none: fp32")
    ap.add_argument("--reuse-lr", action="store_true", help="refit at the reference's lr instead of searching")
    a = ap.parse_args(argv)
    out = reproduce(a.task, a.method, a.seeds, a.backbone, amp=None if a.amp == "none" else a.amp,
                    reuse_lr=a.reuse_lr)
    return 0 if out["verdict"] in (None, "within") else 1
