"""``python -m vpt_explore resolution``: which input size buys the most accuracy per second of training.

    python -m vpt_explore resolution --task count --sizes 56 84 112 --methods linear vpt-deep

DINOv2-S/14 takes any multiple of 14; the number of patch tokens grows with the square of the size
(56 px: 16 patches, 84 px: 36, 112 px: 64), and so does the cost of a training step. For each size
this trains each method once on the ``"cpu"`` profile's VTAB-1k sizes (800 train / 200 val, 10
epochs, seed 0, bf16 where the CPU has it, threads="auto") and reports test accuracy, training
seconds, and the accuracy gained over the smallest size per extra second. The ``"cpu"`` profile's
56 px was chosen from this table (README, "Choosing the resolution").
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

COMMAND = "python -m vpt_explore resolution"


def run(task: str = "count", sizes: Sequence[int] = (56, 84, 112), methods: Sequence[str] = ("linear", "vpt-deep"),
        seed: int = 0, epochs: Optional[int] = None, n_train: Optional[int] = None,
        out: Optional[Path] = None) -> List[Dict]:
    """Train every method at every size; one row per (size, method); saved to ``out`` after each row."""
    from ..analysis.reference.offline_runs import MAIN_IMG_SIZE, REFERENCE_FILE, tuned_lr
    from ..backbones.dinov2_onnx import check_img_size
    from ..backbones.load import load_backbone
    from ..config import TrainConfig
    from ..data.registry import load_task
    from ..methods.factory import make_model
    from ..methods.registry import parse_method
    from ..training.batches import evaluate
    from ..training.loop import train
    from ..training.profiles import PROFILES
    p = PROFILES["cpu"]
    rows: List[Dict] = []
    for size in sizes:
        check_img_size(size)
        vit = load_backbone(p.backbone, img_size=size)
        data = {s: load_task(task, s, vit, n=n) for s, n in (("train", n_train or p.n_train), ("val", p.n_val),
                                                             ("test", p.n_test))}
        for method in methods:
            kw = {"length": p.prompt_length} if parse_method(method)[0].has_prompts else {}
            model = make_model(method, vit, data["train"].num_classes, seed=seed, **kw)
            lr = tuned_lr(task, method, REFERENCE_FILE)  # picked at MAIN_IMG_SIZE; the same lr at every size
            cfg = TrainConfig(**{**p.train_kwargs(), "base_lr": lr, "epochs": epochs or p.epochs}, seed=seed,
                              progress=False)
            t0 = time.time()
            hist = train(model, data["train"], data["val"], cfg)
            acc = 100 * evaluate(model, data["test"])["acc"]
            rows.append({"img_size": size, "patches": vit.patch_embed.num_patches, "method": method, "task": task,
                         "test_acc": round(acc, 2), "train_seconds": round(sum(r["train_seconds"] for r in hist.rows), 1),
                         "seconds": round(time.time() - t0, 1), "images_per_s": round(hist.images_per_s or 0, 1),
                         "base_lr": hist.base_lr, "lr_picked_at": MAIN_IMG_SIZE if lr != "auto" else size,
                         "amp": hist.amp, "threads": hist.threads})
            print(f"{size:>4} px {method:<12} test {acc:5.1f}%  {rows[-1]['train_seconds']:7.1f} s training  "
                  f"{rows[-1]['images_per_s']:6.1f} img/s", flush=True)
            if out is not None:
                Path(out).write_text(json.dumps(rows, indent=1))
    return rows


def format_rows(rows: List[Dict]) -> str:
    """Accuracy, seconds, and accuracy gained per extra second relative to the smallest size, per method."""
    lines = [f"{'px':>4} {'patches':>7} {'method':<12}{'test %':>8}{'train s':>9}{'img/s':>7}{'+acc / +s vs smallest':>24}",
             "-" * 72]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["img_size"])
        base = mine[0]
        for r in mine:
            extra = r["train_seconds"] - base["train_seconds"]
            rate = "" if r is base or extra <= 0 else f"{(r['test_acc'] - base['test_acc']) / extra:+.4f} pt/s"
            lines.append(f"{r['img_size']:>4} {r['patches']:>7} {method:<12}{r['test_acc']:>8.1f}{r['train_seconds']:>9.0f}"
                         f"{r['images_per_s']:>7.0f}{rate:>24}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="count")
    ap.add_argument("--sizes", nargs="+", type=int, default=[56, 84, 112])
    ap.add_argument("--methods", nargs="+", default=["linear", "vpt-deep"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here (after every run)")
    a = ap.parse_args(argv)
    from ..data.registry import list_tasks
    from ..errors import bad_choice
    from ..methods.registry import parse_method
    names = [t.name for t in list_tasks()]
    if a.task not in names:
        raise bad_choice("--task", a.task, names)
    for m in a.methods:
        parse_method(m)
    rows = run(a.task, a.sizes, a.methods, epochs=a.epochs, n_train=a.n_train, out=a.json)
    print("\n" + format_rows(rows))
    return 0
