"""Rebuild the default ``"tiny-dino"`` backbone: a 32 px ViT distilled from DINOv2-S/14, offline.

    python -m vpt_explore pretrain-dino [--scenes 20000] [--epochs 6] [--seed 0] [--out vpt_explore/assets]

Recipe (every step seeded; the log records it):
1. ``scenes.scenes``: unlabelled 64x64 scenes, Fashion-MNIST items pasted at random
   places on scikit-image photos or gradients (no downstream task's images, no labels).
2. Teacher: the offline DINOv2 ViT-S/14 (``load_backbone("dinov2-s14-offline")``) at 112 px sees
   an 8x8 grid of patches, the same grid the 32 px / patch-4 student sees. Its final normalised
   tokens (1 [CLS] + 64 patches, d=384) are computed once and cached (float16).
3. Student: a 6-block timm ViT (d=128) whose final tokens, through two linear heads (one for
   [CLS], one shared by the patches), regress the teacher's standardised tokens token by token
   (mean squared error), so every patch token must say what its image region holds and the [CLS]
   must summarise the scene. The heads are thrown away; the student ships.

Checkpoints after every epoch (``--work DIR``) and resumes from the last one when run again.
Writes ``tiny_dino.safetensors`` (student weights) and ``tiny_dino.log.json`` (recipe, per-epoch
loss, versions, wall time) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .load import ASSETS, TINY_DINO_ARGS, TINY_MEAN, TINY_STD, _tiny_dino_vit, load_backbone
from .scenes import scenes, to_input
from .weights import atomic_save

TEACHER_PX = 112


def _cache_dir() -> Path:
    return Path(os.environ.get("VPT_CACHE_DIR", Path.home() / ".cache" / "vpt_explore")) / "pretrain-dino"


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def teacher_targets(images: np.ndarray, work: Path, chunk: int = 512) -> torch.Tensor:
    """(N, 65, 384) float16 final tokens of the DINOv2 teacher; cached per chunk, resumable."""
    from tqdm.auto import tqdm
    teacher = load_backbone("dinov2-s14-offline", img_size=TEACHER_PX)
    cfg = teacher.pretrained_cfg
    parts = []
    for k in tqdm(range(0, len(images), chunk), desc="teacher", dynamic_ncols=True):
        f = work / f"teacher_{k:07d}.pt"
        if f.exists():
            parts.append(torch.load(f, weights_only=True))
            continue
        x = to_input(images[k:k + chunk], TEACHER_PX, cfg["mean"], cfg["std"])
        t = torch.cat([teacher.forward_features(x[j:j + 64]) for j in range(0, len(x), 64)])  # (c, 65, 384)
        t = t.half()
        _atomic_torch_save(t, f)
        parts.append(t)
    return torch.cat(parts)


class DistillHeads(nn.Module):
    """Linear maps from the student's tokens (d) to the teacher's (384): one for [CLS], one for patches."""

    def __init__(self, d: int, teacher_d: int):
        super().__init__()
        self.cls = nn.Linear(d, teacher_d)
        self.patch = nn.Linear(d, teacher_d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, 1+N, d) -> (B, 1+N, 384)
        return torch.cat([self.cls(tokens[:, :1]), self.patch(tokens[:, 1:])], dim=1)


def _scenes(work: Path, n_scenes: int, seed: int) -> np.ndarray:
    """The unlabelled scenes, made once and cached in ``work`` (labels of the items are never used)."""
    from ..data.sources import fashion_mnist
    imgs_file = work / "scenes.npy"
    if imgs_file.exists():
        return np.load(imgs_file)
    items, _ = fashion_mnist("train")
    imgs = scenes(n_scenes, seed, np.array(items))
    np.save(work / ".scenes.tmp.npy", imgs)
    os.replace(work / ".scenes.tmp.npy", imgs_file)
    return imgs


def _recipe(n_scenes, epochs, seed, batch_size, lr) -> dict:
    return dict(scenes=n_scenes, scene_source="vpt_explore/backbones/scenes.py: scenes() (Fashion-MNIST items on "
                "scikit-image photos/gradients), seeded", teacher=f"dinov2-s14-offline at {TEACHER_PX} px",
                target="final normed tokens ([CLS] + 8x8 patches), standardised per channel",
                loss="MSE, token by token", epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                optimizer="AdamW wd=0.05", schedule="1 epoch warm-up + cosine",
                augment="horizontal flip of scene and teacher grid", model=TINY_DINO_ARGS)


def _flip(x: torch.Tensor, t: torch.Tensor, flip: torch.Tensor) -> tuple:
    """Mirror the chosen scenes (B, 3, H, W) and their teacher grids (B, 1+g*g, D) left-right together."""
    B, g = len(x), math.isqrt(t.shape[1] - 1)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    grid = t[:, 1:].reshape(B, g, g, -1)                                   # (B, g, g, D)
    grid = torch.where(flip[:, None, None, None], grid.flip(2), grid)
    return x, torch.cat([t[:, :1], grid.reshape(B, g * g, -1)], 1)


def _epoch(student, heads, opt, sched, x_all, target, batch_size: int, gen, desc: str) -> float:
    """One pass over the scenes; the mean distillation loss."""
    from tqdm.auto import tqdm
    student.train()
    perm = torch.randperm(len(x_all), generator=gen)
    flip_all = torch.rand(len(x_all), generator=gen) < 0.5
    total, n = 0.0, 0
    for k in tqdm(range(0, len(x_all), batch_size), desc=desc, leave=False, dynamic_ncols=True):
        idx = perm[k:k + batch_size]
        x, t = _flip(x_all[idx], target[idx].float(), flip_all[idx])     # (B, 3, 32, 32), (B, 65, 384)
        loss = F.mse_loss(heads(student.forward_features(x)), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total, n = total + loss.item() * len(idx), n + len(idx)
    return total / n


def pretrain(n_scenes: int = 20000, epochs: int = 6, seed: int = 0, batch_size: int = 128, lr: float = 1e-3,
             out: Path = ASSETS, work: Path | None = None) -> dict:
    """Run (or resume) the recipe above; returns the log written beside the weights."""
    work = Path(work or _cache_dir() / f"n{n_scenes}-s{seed}")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    imgs = _scenes(work, n_scenes, seed)
    target = teacher_targets(imgs, work).float()                          # (N, 65, 384)
    mu, sd = target.mean((0, 1)), target.std((0, 1)) + 1e-6               # per-channel standardisation
    target = ((target - mu) / sd).half()
    print(f"scenes {imgs.shape}, teacher targets {tuple(target.shape)} ({time.time() - t0:.0f} s)", flush=True)
    x_all = to_input(imgs, TINY_DINO_ARGS["img_size"], TINY_MEAN, TINY_STD)  # (N, 3, 32, 32)

    torch.manual_seed(seed)
    student, heads = _tiny_dino_vit(), DistillHeads(TINY_DINO_ARGS["embed_dim"], target.shape[-1])
    opt = torch.optim.AdamW(list(student.parameters()) + list(heads.parameters()), lr=lr, weight_decay=0.05)
    warm = math.ceil(len(x_all) / batch_size)
    total = epochs * warm
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    log = {"recipe": _recipe(n_scenes, epochs, seed, batch_size, lr), "epochs": [],
           "versions": dict(torch=torch.__version__, python=platform.python_version())}
    ckpt, start = work / "checkpoint.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)  # our own file, written below
        student.load_state_dict(state["student"]); heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        start, log["epochs"] = state["epoch"], state["log_epochs"]
        print(f"resumed after epoch {start}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(start):                                               # replay the permutations' RNG
        torch.randperm(len(x_all), generator=gen); torch.rand(len(x_all), generator=gen)
    for epoch in range(start, epochs):
        loss = _epoch(student, heads, opt, sched, x_all, target, batch_size, gen, f"epoch {epoch + 1}")
        log["epochs"].append(dict(epoch=epoch + 1, distill_loss=round(loss, 4), seconds=round(time.time() - t0, 1)))
        print(log["epochs"][-1], flush=True)
        _atomic_torch_save({"student": student.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "epoch": epoch + 1, "log_epochs": log["epochs"]}, ckpt)
    out = Path(out)
    atomic_save({k: v.contiguous() for k, v in student.state_dict().items()}, out / "tiny_dino.safetensors",
                metadata={"source": "vpt_explore.backbones.pretrain_dino"})
    (out / "tiny_dino.log.json").write_text(json.dumps(log, indent=1))
    return log


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore pretrain-dino", description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--work", type=Path, default=None, help="checkpoint/cache folder (default: the cache dir)")
    a = ap.parse_args(argv)
    pretrain(n_scenes=a.scenes, epochs=a.epochs, seed=a.seed, batch_size=a.batch_size, out=a.out, work=a.work)


if __name__ == "__main__":
    main()
