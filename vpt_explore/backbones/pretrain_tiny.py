"""Rebuild the shipped ``"tiny"`` backbone: supervised pretraining on Fashion-MNIST.

    python -m vpt_explore pretrain-tiny [--epochs 3] [--seed 0] [--out vpt_explore/assets]

Fashion-MNIST (60k train images, 28x28, padded to 32x32, grey copied to RGB, random shifts and
flips) is the "upstream" data; it is therefore never one of the downstream tasks the demo reports.
Writes ``tiny_vit.safetensors`` (weights, float32) and ``tiny_vit.log.json`` (recipe, per-epoch
loss and test accuracy, versions, wall time).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sources import fashion_mnist
from .load import ASSETS, TINY_ARGS, TINY_MEAN, TINY_STD, _tiny_vit
from .weights import atomic_save


def _to_batch(x_uint8: torch.Tensor, train: bool, gen: torch.Generator) -> torch.Tensor:
    """(B, 28, 28) uint8 -> (B, 3, 32, 32) normalised floats, with shifts/flips when training."""
    x = x_uint8.float().div_(255).unsqueeze(1)                     # (B, 1, 28, 28)
    if train:
        x = F.pad(x, (6, 6, 6, 6))                                 # (B, 1, 40, 40)
        i, j = torch.randint(0, 9, (2,), generator=gen).tolist()
        x = x[:, :, i:i + 32, j:j + 32]                            # (B, 1, 32, 32)
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    else:
        x = F.pad(x, (2, 2, 2, 2))                                 # (B, 1, 32, 32)
    x = (x - TINY_MEAN[0]) / TINY_STD[0]
    return x.expand(-1, 3, -1, -1).contiguous()                    # (B, 3, 32, 32)


def pretrain(epochs: int = 3, seed: int = 0, batch_size: int = 128, lr: float = 1e-3,
             out: Path = ASSETS, limit: int | None = None) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    xtr, ytr = torch.from_numpy(np.array(xtr)), torch.from_numpy(np.array(ytr))
    xte, yte = torch.from_numpy(np.array(xte)), torch.from_numpy(np.array(yte))
    vit = _tiny_vit()
    opt = torch.optim.AdamW(vit.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(xtr) / batch_size)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    log = {"recipe": dict(data="Fashion-MNIST train (60k)", epochs=epochs, seed=seed, batch_size=batch_size,
                          lr=lr, optimizer="AdamW wd=0.05", schedule="5% warm-up + cosine",
                          augment="pad 6 + random 32x32 crop, horizontal flip", model=TINY_ARGS,
                          label_smoothing=0.1),
           "versions": dict(torch=torch.__version__, python=platform.python_version()), "epochs": []}
    t0 = time.time()
    for epoch in range(epochs):
        vit.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total, n = 0.0, 0
        for k in range(0, len(xtr), batch_size):
            idx = perm[k:k + batch_size]
            loss = F.cross_entropy(vit(_to_batch(xtr[idx], True, gen)), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        acc = heldout_accuracy(vit, xte, yte)
        row = dict(epoch=epoch + 1, train_loss=round(total / n, 4), test_acc=round(acc, 4),
                   seconds=round(time.time() - t0, 1))
        log["epochs"].append(row)
        print(row, flush=True)
    out = Path(out)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    atomic_save(state, out / "tiny_vit.safetensors", metadata={"source": "vpt_explore.pretrain_tiny"})
    (out / "tiny_vit.log.json").write_text(json.dumps(log, indent=1))
    return log


@torch.no_grad()
def heldout_accuracy(vit, x, y, batch_size: int = 1000) -> float:
    """Top-1 accuracy of the pretraining classifier on held-out Fashion-MNIST."""
    vit.eval()
    correct = 0
    for k in range(0, len(x), batch_size):
        correct += (vit(_to_batch(x[k:k + batch_size], False, None)).argmax(1) == y[k:k + batch_size]).sum().item()
    return correct / len(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore pretrain-tiny", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    a = ap.parse_args(argv)
    pretrain(epochs=a.epochs, seed=a.seed, out=a.out, limit=a.limit)


if __name__ == "__main__":
    main()
