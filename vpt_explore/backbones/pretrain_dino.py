"""Rebuild the default ``"tiny-dino"`` backbone: a 32 px ViT distilled from DINOv2-S/14, offline.

    python -m vpt_explore pretrain-dino [--scenes 24000] [--epochs 12] [--seed 0] [--out vpt_explore/assets]

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


def pretrain(n_scenes: int = 24000, epochs: int = 12, seed: int = 0, batch_size: int = 128, lr: float = 1e-3,
             out: Path = ASSETS, work: Path | None = None) -> dict:
    """Run (or resume) the recipe above; returns the log written beside the weights."""
    from tqdm.auto import tqdm
    from ..data.sources import fashion_mnist
    work = Path(work or _cache_dir() / f"n{n_scenes}-s{seed}")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    items, _ = fashion_mnist("train")                                     # labels are never used
    imgs_file = work / "scenes.npy"
    if imgs_file.exists():
        imgs = np.load(imgs_file)
    else:
        imgs = scenes(n_scenes, seed, np.array(items))
        np.save(work / ".scenes.tmp.npy", imgs)
        os.replace(work / ".scenes.tmp.npy", imgs_file)
    print(f"scenes: {imgs.shape} ({time.time() - t0:.0f} s)", flush=True)
    target = teacher_targets(imgs, work).float()                          # (N, 65, 384)
    mu, sd = target.mean((0, 1)), target.std((0, 1)) + 1e-6               # per-channel standardisation
    target = ((target - mu) / sd).half()
    print(f"teacher targets: {tuple(target.shape)} ({time.time() - t0:.0f} s)", flush=True)
    x_all = to_input(imgs, TINY_DINO_ARGS["img_size"], TINY_MEAN, TINY_STD)  # (N, 3, 32, 32)

    torch.manual_seed(seed)
    student = _tiny_dino_vit()
    heads = DistillHeads(TINY_DINO_ARGS["embed_dim"], target.shape[-1])
    params = list(student.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    total, warm = epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    log = {"recipe": dict(scenes=n_scenes, scene_source="pretrain_scenes.scenes (Fashion-MNIST items on "
                          "scikit-image photos/gradients), seeded", teacher=f"dinov2-s14-offline at {TEACHER_PX} px",
                          target="final normed tokens ([CLS] + 8x8 patches), standardised per channel",
                          loss="MSE, token by token", epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                          optimizer="AdamW wd=0.05", schedule="1 epoch warm-up + cosine",
                          augment="horizontal flip of scene and teacher grid", model=TINY_DINO_ARGS),
           "versions": dict(torch=torch.__version__, python=platform.python_version()), "epochs": []}
    ckpt = work / "checkpoint.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)  # our own file, written below
        student.load_state_dict(state["student"]); heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        start, log["epochs"] = state["epoch"], state["log_epochs"]
        print(f"resumed after epoch {start}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(start):                                               # replay the permutations' RNG
        torch.randperm(len(x_all), generator=gen); torch.rand(len(x_all), generator=gen)
    grid = int(math.isqrt(target.shape[1] - 1))
    for epoch in range(start, epochs):
        student.train()
        perm = torch.randperm(len(x_all), generator=gen)
        flip_all = torch.rand(len(x_all), generator=gen) < 0.5
        total_loss, n = 0.0, 0
        for k in tqdm(range(0, len(x_all), batch_size), desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True):
            idx = perm[k:k + batch_size]
            x, t = x_all[idx], target[idx].float()                        # (B, 3, 32, 32), (B, 65, 384)
            flip = flip_all[idx]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            tp = t[:, 1:].reshape(len(idx), grid, grid, -1)               # (B, 8, 8, 384)
            tp = torch.where(flip[:, None, None, None], tp.flip(2), tp)
            t = torch.cat([t[:, :1], tp.reshape(len(idx), grid * grid, -1)], 1)
            loss = F.mse_loss(heads(student.forward_features(x)), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss, n = total_loss + loss.item() * len(idx), n + len(idx)
        row = dict(epoch=epoch + 1, distill_loss=round(total_loss / n, 4), seconds=round(time.time() - t0, 1))
        log["epochs"].append(row)
        print(row, flush=True)
        _atomic_torch_save({"student": student.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "epoch": epoch + 1, "log_epochs": log["epochs"]}, ckpt)
    out = Path(out)
    atomic_save({k: v.contiguous() for k, v in student.state_dict().items()}, out / "tiny_dino.safetensors",
                metadata={"source": "vpt_explore.pretrain_dino"})
    (out / "tiny_dino.log.json").write_text(json.dumps(log, indent=1))
    return log


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore pretrain-dino", description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--work", type=Path, default=None, help="checkpoint/cache folder (default: the cache dir)")
    a = ap.parse_args(argv)
    pretrain(n_scenes=a.scenes, epochs=a.epochs, seed=a.seed, batch_size=a.batch_size, out=a.out, work=a.work)


if __name__ == "__main__":
    main()
