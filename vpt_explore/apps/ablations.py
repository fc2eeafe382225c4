"""``python -m vpt_explore ablations``: train notebook 09's ablation plan once and ship the results.

    python -m vpt_explore ablations [--task shapes-loc] [--out FILE] [--threads 2]

Each run trains on the ``"cpu"`` profile's VTAB-1k sizes (800 train / 200 val / 500 test, 10
epochs, batch 32, bf16 where the CPU has it, seed 0) with the base lr the offline reference picked
for its method on this task (searched once per method where the reference has no cell). Results
are saved after every run, so an interrupted job resumes where it stopped.
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional

COMMAND = "python -m vpt_explore ablations"


def generate(task: Optional[str] = None, out=None, seed: int = 0, progress: bool = True,
             threads=None) -> Dict:
    """Train the plan for ``task`` (default: the "cpu" profile's structured task); returns the file's data."""
    from ..analysis.reference.offline_runs import reference_file, tuned_lr
    from ..config import TrainConfig
    from ..data.registry import load_task
    from ..training.ablations import ablation_plan, ablations_file, build_ablation, run_plan
    from ..training.batches import evaluate
    from ..training.loop import find_base_lr, train
    from ..training.profiles import PROFILES
    from ..training.threads import apply_threads
    P = PROFILES["cpu"]
    task = task or P.task("structured")
    apply_threads(threads)
    vit = P.load_backbone()
    sets = {s: load_task(task, s, vit, n=n, seed=seed) for s, n in (("train", P.n_train), ("val", P.n_val),
                                                                   ("test", P.n_test))}
    C, M, N = sets["train"].num_classes, vit.patch_embed.num_patches, len(vit.blocks)
    plan = ablation_plan(P.prompt_length, P.prompt_lengths, M, N, C)
    reference = reference_file(P.backbone, P.img_size)
    lrs: Dict[str, float] = {}
    base = dict(P.train_kwargs(), seed=seed, progress=False)

    def fit(a):
        model = build_ablation(a, vit, C, sets["train"], seed)
        if a.method not in lrs:
            lr = tuned_lr(task, a.method, reference)
            if lr == "auto":
                lr = find_base_lr(model, sets["train"], sets["val"], TrainConfig(**base)).best
            lrs[a.method] = lr
        data = sets["train"] if a.fraction == 1.0 else load_task(task, "train", vit, fraction=a.fraction, seed=seed)
        hist = train(model, data, sets["val"], TrainConfig(**dict(base, base_lr=lrs[a.method])))
        return {"section": a.section, "label": a.label, "accuracy": evaluate(model, sets["test"])["acc"],
                "trainable": hist.trainable, "base_lr": lrs[a.method], "status": hist.status,
                "n_train": len(data), "amp": hist.amp}

    meta = {"backbone": P.backbone, "img_size": P.img_size, "task": task, "seed": seed,
            "protocol": {"n_train": P.n_train, "n_val": P.n_val, "n_test": P.n_test, "epochs": P.epochs,
                         "batch_size": P.batch_size, "lr": "the offline reference's pick per method"},
            "command": f"{COMMAND} --task {task}"}
    return run_plan(plan, fit, out or ablations_file(P.backbone, P.img_size), meta, progress)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default=None, help="offline task (default: the cpu profile's structured task)")
    ap.add_argument("--out", default=None, help="results file (default: the shipped one in the package)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default=None, help="torch CPU threads: an integer or 'auto'")
    args = ap.parse_args(argv)
    threads = args.threads if args.threads in (None, "auto") else int(args.threads)
    generate(args.task, args.out, args.seed, threads=threads)
    return 0
