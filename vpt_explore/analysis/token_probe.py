"""Where the answer sits in a frozen backbone: a linear probe on its [CLS] token vs on its patch tokens.

VPT trains prompts and a linear head on the final [CLS] embedding (paper Sec. 3, eqs. (7)-(8)). A
head on [CLS] can only use what attention has moved into [CLS]; prompts help when they change that
routing. This probe asks how much a *linear* read-out of the frozen backbone's final tokens can
know, with no prompts and no training of the backbone:

* ``"cls"``: the final [CLS] embedding, (B, D): what Linear and VPT's head read;
* ``"patch-mean"``: the mean of the final patch tokens, (B, D): the paper's Image-pool (Fig. 8);
* ``"patches"``: all final patch tokens concatenated, (B, m * D): keeps *where* each token is.

A multinomial logistic regression (scikit-learn, standardised inputs, L2, ``C=1``) is fitted on
one split and scored on another, the same way for every feature. When ``"patches"`` is high and
``"cls"`` low, the information is in the frozen patch tokens; whether prompts can route it to [CLS]
is what VPT-deep's accuracy on the same task shows (``vx.reference.scale.format_probe``).

    from vpt_explore.analysis import token_probe
    row = token_probe.token_probe(vit, "shapes-loc", n_train=200, n_test=200)
    row["acc"]          # {"cls": 32.4, "patch-mean": 37.6, "patches": 99.8}  (test accuracy, %)
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, bad_choice
from .probes import _backbone, eval_mode

FEATURES = ("cls", "patch-mean", "patches")


def _check_features(features: Sequence[str]) -> tuple:
    if isinstance(features, str) or not features:
        raise ConfigError(f"features={features!r} must be a non-empty list of names from {FEATURES}")
    for f in features:
        if f not in FEATURES:
            raise bad_choice("features", f, FEATURES)
    return tuple(features)


def features_from_tokens(tokens, num_prefix: int = 1, features: Sequence[str] = FEATURES) -> Dict[str, np.ndarray]:
    """Split final tokens (N, R + m, D) into the probe's inputs.

    Returns ``{"cls": (N, D), "patch-mean": (N, D), "patches": (N, m * D)}`` (the features asked for).

    ``num_prefix`` is R, the [CLS] and register tokens in front of the m patch tokens; "cls" is index 0.
    """
    features = _check_features(features)
    t = tokens.detach().float().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens, np.float32)
    if t.ndim != 3:
        raise ConfigError(f"tokens has shape {tuple(t.shape)}; expected (N, R + m, D): images x tokens x width")
    if isinstance(num_prefix, bool) or not isinstance(num_prefix, int) or not 0 <= num_prefix < t.shape[1]:
        raise ConfigError(f"num_prefix={num_prefix!r} must be an integer in [0, {t.shape[1] - 1}] "
                          f"(the tokens before the patches)")
    if "cls" in features and num_prefix < 1:
        raise ConfigError("features include 'cls' but num_prefix=0: this backbone has no [CLS] token; "
                          "probe 'patch-mean' and 'patches' only")
    patches = t[:, num_prefix:]                                   # (N, m, D)
    out = {"cls": lambda: t[:, 0], "patch-mean": lambda: patches.mean(1),
           "patches": lambda: patches.reshape(len(t), -1)}        # (N, m * D), token order = grid order
    return {f: np.ascontiguousarray(out[f]()) for f in features}


@torch.no_grad()
def token_features(model: nn.Module, images: torch.Tensor, features: Sequence[str] = FEATURES,
                   batch_size: int = 128) -> Dict[str, np.ndarray]:
    """The frozen backbone's final tokens (after its last ``norm``), as the probe's inputs.

    Read-only: no gradients, eval mode during the pass, every submodule's train/eval flag restored
    after. A ``PromptedViT`` is probed through its plain backbone (``model.vit``), without prompts.
    Images are moved to the backbone's device in batches of ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
    vit = _backbone(model)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ConfigError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    device = next(vit.parameters()).device
    chunks = []
    with eval_mode(vit):
        for i in range(0, len(images), batch_size):
            chunks.append(vit.forward_features(images[i:i + batch_size].to(device)).float().cpu())  # (b, R+m, D)
    tokens = torch.cat(chunks)
    return features_from_tokens(tokens, int(vit.num_prefix_tokens), features)


def probe_accuracy(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, C: float = 1.0,
                   max_iter: int = 2000) -> float:
    """Test accuracy (%) of a standardised multinomial logistic regression fitted on (train_x, train_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    for name, x, y in (("train_x", train_x, train_y), ("test_x", test_x, test_y)):
        if np.ndim(x) != 2 or len(x) != len(y):
            raise ConfigError(f"{name} has shape {np.shape(x)} for {len(y)} labels; "
                              f"expected (n, features) with n = labels")
    if train_x.shape[1] != test_x.shape[1]:
        raise ConfigError(f"train_x has {train_x.shape[1]} features and test_x {test_x.shape[1]}; they must match")
    if len(np.unique(train_y)) < 2:
        raise ConfigError(f"train_y holds one class only ({np.unique(train_y).tolist()}); a probe needs two or more")
    if not (isinstance(C, (int, float)) and C > 0):
        raise ConfigError(f"C={C!r} must be a number > 0 (inverse L2 strength)")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train_x, train_y)
    return round(100.0 * float(clf.score(test_x, test_y)), 2)


def probe_tokens(train_tokens, train_y, test_tokens, test_y, num_prefix: int = 1,
                 features: Sequence[str] = FEATURES, C: float = 1.0) -> Dict[str, float]:
    """{feature: test accuracy (%)} of one probe per feature on final tokens (N, R + m, D)."""
    features = _check_features(features)
    tr = features_from_tokens(train_tokens, num_prefix, features)
    te = features_from_tokens(test_tokens, num_prefix, features)
    return {f: probe_accuracy(tr[f], train_y, te[f], test_y, C=C) for f in features}


def token_probe(model: nn.Module, task: str, n_train: Optional[int] = None, n_test: Optional[int] = None,
                seed: int = 0, features: Sequence[str] = FEATURES, train_split: str = "trainval",
                C: float = 1.0) -> Dict:
    """Probe the frozen backbone's final tokens on one task: fitted on ``train_split``, scored on ``test``.

    The default splits are the offline reference's (train800val200 -> 500 test images), so the
    numbers sit next to its Linear and VPT-deep rows. ``n_train`` / ``n_test`` keep seeded,
    stratified subsets (seconds in fast mode). Returns a dict: ``backbone``, ``img_size``,
    ``params`` (of the backbone), ``task``, ``n_train``, ``n_test``, ``dims`` and ``acc``
    ({feature: test accuracy %}), ``seconds``.
    """
    from ..backbones.load import backbone_name
    from ..data.registry import load_task
    features = _check_features(features)
    t0 = time.time()
    vit = _backbone(model)
    train = load_task(task, train_split, vit, n=n_train, seed=seed)
    test = load_task(task, "test", vit, n=n_test, seed=seed)
    tr, te = token_features(vit, train.images, features), token_features(vit, test.images, features)
    acc = {f: probe_accuracy(tr[f], train.labels.numpy(), te[f], test.labels.numpy(), C=C) for f in features}
    return {"backbone": backbone_name(vit), "img_size": int(vit.patch_embed.img_size[0]),
            "params": int(sum(p.numel() for p in vit.parameters())), "task": task, "n_train": len(train),
            "n_test": len(test), "dims": {f: int(tr[f].shape[1]) for f in features}, "acc": acc,
            "seconds": round(time.time() - t0, 1)}


def format_probe(rows: Sequence[Dict], methods: Sequence[str] = ("linear", "vpt-deep", "full")) -> str:
    """Probe rows as a table, each next to the same task's offline reference on the same backbone.

    A row may carry ``"source"`` (e.g. ``"shipped"`` or ``"yours"``); reference cells that have not
    been run yet print as ``not run``.
    """
    from .reference.offline_runs import cell, reference_file
    from ..errors import MissingFileError
    head = (f"{'task':<12}{'backbone':<25}{'source':<9}{'n (fit/test)':>13}{'[CLS]':>8}{'patch-mean':>11}"
            f"{'patches':>9}  |" + "".join(f"{m:>10}" for m in methods))
    lines = ["linear probe on frozen final tokens (test accuracy %)" + " " * 18 + "| offline reference (3 seeds)",
             head, "-" * len(head)]
    for r in rows:
        ref = reference_file(r["backbone"], r.get("img_size"))
        refs = []
        for m in methods:
            try:
                c = cell(r["task"], m, ref)
            except MissingFileError:
                c = None
            refs.append("not run" if c is None else f"{c['mean']:.1f}")
        acc = r["acc"]
        lines.append(f"{r['task']:<12}{r['backbone'] + ' ' + str(r.get('img_size', '')) + 'px':<25}"
                     f"{r.get('source', ''):<9}{str(r['n_train']) + '/' + str(r['n_test']):>13}"
                     + "".join(f"{acc[f]:>{w}.1f}" if f in acc else f"{'-':>{w}}"
                               for f, w in (("cls", 8), ("patch-mean", 11), ("patches", 9)))
                     + "  |" + "".join(f"{v:>10}" for v in refs))
    lines.append("Linear, VPT-deep and full read [CLS] (the paper's default head, Sec. 3); 'patches' is all final "
                 "patch tokens concatenated, which keeps where each token is.")
    return "\n".join(lines)
