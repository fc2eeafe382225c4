"""Figures for the course: embeddings (Fig. 9), attention to prompts, attributions, curves, cost.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, never
shown): a notebook displays it as a cell's last value; scripts call ``fig.savefig(path)``.
matplotlib, scikit-learn and umap-learn are imported inside the functions that need them.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import probes
from ..errors import ConfigError, DataError, bad_choice, require_package
from .theme import figure, finish, set_theme, theme  # noqa: F401 (vx.viz.set_theme)
from .attributions import attributions, prompt_attributions  # re-exported: notebooks use vx.viz

__all__ = ["reduce_2d", "separability", "collect_embeddings", "plot_embeddings",
           "plot_layer_embeddings", "plot_attention_shares", "plot_attention_overlay",
           "plot_prompt_attention", "attributions", "prompt_attributions", "plot_attributions",
           "plot_history", "plot_cost", "plot_results_table", "set_theme", "theme"]
_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


# ----------------------------------------------------------------- embeddings (Fig. 9)
def reduce_2d(X, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) with t-SNE, UMAP or PCA; fewer than 5 points always use PCA."""
    X = _np(X).astype(np.float64).reshape(len(X), -1)
    N = len(X)
    if method not in _NAMES:
        raise bad_choice("method", method, tuple(_NAMES) + ("both",))
    if N < 2 or np.allclose(X, X[0]):                             # e.g. [CLS] at x_0: one point
        return np.zeros((N, 2))
    if method == "pca" or N < 5:
        from sklearn.decomposition import PCA
        k = max(1, min(2, N, X.shape[1]))
        Z = PCA(n_components=k, random_state=seed).fit_transform(X)
        return np.pad(Z, ((0, 0), (0, 2 - Z.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits
        perplexity = float(min(30.0, max(1.0, (N - 1) / 3)))     # must stay below N
        # Barnes-Hut t-SNE hits an OpenMP barrier thousands of times; on shared or busy cores each
        # one can wait a scheduler slice (measured: 120 points 15-40 s with 2 threads, 0.5 s with 1)
        with threadpool_limits(1 if N <= 5000 else None, user_api="openmp"):
            return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)
    umap = require_package("umap", "umap-learn", "UMAP plots")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                           # n_jobs / numba notices
        return umap.UMAP(n_neighbors=max(2, min(15, N - 1)), random_state=seed).fit_transform(X)


def separability(X, y, score: str = "logreg", folds: int = 5) -> float:
    """Linear separability: k-fold accuracy of logistic regression (or 5-NN) on raw embeddings."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _np(X).reshape(len(X), -1), _np(y)
    counts = np.unique(y, return_counts=True)[1]
    k = int(min(folds, counts.min()))
    if len(counts) < 2 or k < 2:
        return float("nan")
    if score == "logreg":
        from sklearn.linear_model import LogisticRegression
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    elif score == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        neighbours = max(1, min(5, len(y) * (k - 1) // k - 1))     # fits the smallest train fold
        clf = make_pipeline(StandardScaler(), KNeighborsClassifier(neighbours))
    else:
        raise bad_choice("score", score, ("logreg", "knn"))
    cv = StratifiedKFold(k, shuffle=True, random_state=0)
    return float(cross_val_score(clf, X, y, cv=cv).mean())


def _take(data, n: Optional[int], batch_size: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
    """Up to n (images, labels) from a (X, y) pair, a Dataset or a DataLoader."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        X, y = data
        return X[:n], torch.as_tensor(y)[:n]
    loader = data if isinstance(data, torch.utils.data.DataLoader) else \
        torch.utils.data.DataLoader(data, batch_size=batch_size)
    xs, ys, got = [], [], 0
    for images, labels in loader:
        xs.append(images)
        ys.append(torch.as_tensor(labels))
        got += len(images)
        if n is not None and got >= n:
            break
    if not xs:
        raise DataError("no examples in the data given to collect embeddings from")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


@torch.no_grad()
def _features(model: nn.Module, images: torch.Tensor, layer: int) -> torch.Tensor:
    if layer != -1 or not hasattr(model, "forward_features"):
        return probes.cls_per_layer(model, images)[:, layer]     # (B, D)
    with probes.eval_mode(model):
        f = model.forward_features(images)
        if f.ndim == 3 and hasattr(model, "forward_head"):          # plain timm ViT: (B, N, D)
            f = model.forward_head(f, pre_logits=True)
    return f


def collect_embeddings(models: Mapping[str, nn.Module], data, n: Optional[int] = None,
                       layer: int = -1, batch_size: int = 64) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Embeddings of the same images under several models, ready for ``plot_embeddings``.

    Args:
        data: (images, labels) tensors, a Dataset or a DataLoader of (image, label).
        layer: -1: the head's input (the final, normed, pooled features of Fig. 9); any other
            index picks ``probes.cls_per_layer`` (0 = embedding, i = after block i-1).

    Returns:
        ``{name: (X (N, D), y (N,))}`` numpy arrays.
    """
    images, labels = _take(data, n, batch_size)
    out = {}
    for name, model in models.items():
        dev = next(model.parameters()).device
        feats = [_features(model, images[i:i + batch_size].to(dev), layer).float().cpu()
                 for i in range(0, len(images), batch_size)]
        out[name] = (torch.cat(feats).numpy(), labels.numpy())
    return out


def plot_embeddings(embeddings: Mapping[str, tuple], method: str = "tsne", seed: int = 0,
                    score: Optional[str] = "logreg"):
    """Paper Fig. 9: 2-D maps of final embeddings, one panel per model, coloured by class.

    Args:
        embeddings: ``{name: (X (N, D), y (N,))}``, e.g. Linear, VPT-shallow, VPT-deep, Full.
        method: ``"tsne"``, ``"umap"``, ``"pca"`` or ``"both"`` (t-SNE row above a UMAP row).
        score: ``"logreg"`` or ``"knn"`` 5-fold accuracy on the raw embedding, printed per panel.
    """
    methods = ("tsne", "umap") if method == "both" else (method,)
    fig, axes = figure(len(methods), len(embeddings))
    for c, (name, (X, y)) in enumerate(embeddings.items()):
        X, y = _np(X).reshape(len(X), -1), _np(y)
        acc = separability(X, y, score) if score else None
        for r, m in enumerate(methods):
            Z, ax = reduce_2d(X, m, seed), axes[r, c]
            ax.scatter(Z[:, 0], Z[:, 1], c=y, s=10, cmap="tab10" if y.max() < 10 else "turbo")
            ax.set(xticks=[], yticks=[], title=name if r == 0 else "")
            if c == 0:
                ax.set_ylabel(_NAMES[m] if len(X) >= 5 else "PCA")
            if acc is not None:
                ax.text(0.02, 0.02, f"{score} 5-fold acc {acc:.2f}", transform=ax.transAxes,
                        fontsize=8, bbox=dict(facecolor="white", alpha=0.7, lw=0))
    fig.suptitle("Fig. 9: final [CLS] embeddings by class")
    return finish(fig)


def plot_layer_embeddings(model: nn.Module, data, layers: Optional[Sequence[int]] = None,
                          method: str = "tsne", n: Optional[int] = 200, seed: int = 0,
                          token: str = "cls"):
    """[CLS] (or mean patch) embeddings through the depth: x_0 (embedding) ... x_L (cf. Fig. 9)."""
    images, labels = _take(data, n)
    Z = probes.cls_per_layer(model, images, token)                 # (N, L+1, D)
    L = Z.shape[1] - 1
    layers = sorted(set(layers if layers is not None else (0, L // 3, 2 * L // 3, L)))
    emb = {(f"x_{i}" + (" (embedding)" if i == 0 else "")): (Z[:, i], labels) for i in layers}
    fig = plot_embeddings(emb, method, seed)
    fig.suptitle(f"[{token.upper()}] through the layers")
    return finish(fig)


# ----------------------------------------------------------------- attention
def _shares(source, images) -> dict:
    if isinstance(source, Mapping):
        return source
    if images is None:
        raise ConfigError("pass images along with a model (or pass probes.attention_to_prompts(...))")
    return probes.attention_to_prompts(source, images)


def plot_attention_shares(source, images: Optional[torch.Tensor] = None):
    """Share of [CLS] attention on prompts per layer and head, and per-layer prefix/prompt/patch.

    Args:
        source: a dict from ``probes.attention_to_prompts`` or a model (then give ``images``).
    """
    s = _shares(source, images)
    L, H = s["prompt"].shape
    fig, axes = figure(1, 2, (4.2, 3.4))
    im = axes[0, 0].imshow(s["prompt"], aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axes[0, 0].set(xlabel="head", ylabel="block", title="[CLS] -> prompts share",
                   xticks=range(H), yticks=range(L))
    fig.colorbar(im, ax=axes[0, 0])
    means = [s[k].mean(1) for k in ("prefix", "prompt", "patch")]  # each (L,)
    axes[0, 1].stackplot(range(L), *means, labels=["prefix ([CLS], registers)", "prompts", "patches"])
    axes[0, 1].set(xlabel="block", ylabel="share of [CLS] attention (head mean)", ylim=(0, 1))
    axes[0, 1].legend(loc="upper left")
    return finish(fig)


def _display_images(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Normalised (B, C, H, W) -> (B, H, W, C) in [0, 1] with the backbone's mean/std."""
    try:
        from ..data.dataset import data_config
        dc = data_config(probes._backbone(model))
        mean, std = dc["mean"], dc["std"]
    except (ConfigError, AttributeError):  # not a timm ViT: assume [-1, 1] scaling
        mean, std = (0.5,) * 3, (0.5,) * 3
    C = images.shape[1]
    mean = torch.tensor(mean[:C]).view(1, C, 1, 1)
    std = torch.tensor(std[:C]).view(1, C, 1, 1)
    return (images.detach().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _overlay(ax, img: np.ndarray, heat, title: str = "") -> None:
    """Show img (H, W, C) with a [0, 1]-scaled heat map (h, w) upsampled on top."""
    H, W = img.shape[:2]
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
    if heat is not None:
        h = torch.as_tensor(np.asarray(heat), dtype=torch.float32)[None, None]  # (1, 1, h, w)
        h = F.interpolate(h, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        h = (h - h.min()) / (h.max() - h.min() + 1e-12)
        ax.imshow(h.numpy(), cmap="inferno", alpha=0.55)
    ax.set(xticks=[], yticks=[], title=title)


def _cls_patch_map(model: nn.Module, images: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, h, w) [CLS] -> patch attention: last block head mean, or rollout."""
    if mode == "last":
        return torch.as_tensor(probes.attention_to_prompts(model, images)["patch_maps"][:, -1].mean(1))
    if mode != "rollout":
        raise bad_choice("mode", mode, ("last", "rollout"))
    with torch.no_grad(), probes.eval_mode(model), probes.record_attention(model) as rec:
        model(images)
    return probes.attention_rollout(rec)


def plot_attention_overlay(model: nn.Module, images: torch.Tensor, baseline: Optional[nn.Module] = None,
                           mode: str = "last", max_images: int = 4):
    """[CLS] -> patch attention over the images, with prompts and (optionally) without.

    Args:
        baseline: e.g. the same backbone with ``PromptConfig(length=0)``; adds a column.
        mode: ``"last"`` (last block, head mean) or ``"rollout"`` (attention rollout).
    """
    images = images[:max_images]
    cols = {"with prompts": model} if baseline is None else {"with prompts": model, "baseline": baseline}
    heats = {k: _cls_patch_map(m, images, mode) for k, m in cols.items()}
    shown = _display_images(model, images)
    fig, axes = figure(len(images), 1 + len(cols), (2.4, 2.4))
    for r in range(len(images)):
        _overlay(axes[r, 0], shown[r], None, "image" if r == 0 else "")
        for c, k in enumerate(cols, start=1):
            _overlay(axes[r, c], shown[r], heats[k][r], f"{k} ({mode})" if r == 0 else "")
    return finish(fig)


def plot_prompt_attention(source, images: Optional[torch.Tensor] = None):
    """Which prompt tokens [CLS] attends to: one bar chart per block (head mean, batch mean)."""
    s = _shares(source, images)
    per = s["per_prompt"].mean(1)                                  # (L, p), NaN: no prompts
    L, P = per.shape
    if P == 0:
        raise ConfigError("this model puts no prompt tokens in the sequence (no prompts, or location "
                          "'add'/'concat-channel')")
    cols = min(4, L)
    fig, axes = figure(math.ceil(L / cols), cols, (2.6, 2.2))
    for i, ax in enumerate(axes.flat):
        if i >= L:
            ax.axis("off")
            continue
        if np.isnan(per[i]).all():
            ax.text(0.5, 0.5, "no prompts yet", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.bar(range(P), per[i], color="C1")
        ax.set(title=f"block {i}", xlabel="prompt token" if i >= L - cols else "")
    fig.suptitle("[CLS] -> prompt attention")
    return finish(fig)


def plot_attributions(models: Mapping[str, nn.Module], images: torch.Tensor, targets,
                      method: str = "ig", n_steps: int = 16, max_images: int = 4):
    """|attribution| heat maps: rows = images, columns = models (e.g. VPT-deep vs linear probe)."""
    images = images[:max_images]
    t = torch.as_tensor(targets, dtype=torch.long)
    t = t.expand(len(images)) if t.ndim == 0 else t[:max_images]
    heats = {k: attributions(m, images, t, method=method, n_steps=n_steps).abs() for k, m in models.items()}
    shown = _display_images(next(iter(models.values())), images)
    fig, axes = figure(len(images), 1 + len(models), (2.4, 2.4))
    for r in range(len(images)):
        _overlay(axes[r, 0], shown[r], None, f"image, target {int(t[r])}")
        for c, k in enumerate(models, start=1):
            _overlay(axes[r, c], shown[r], heats[k][r], f"{k} ({method})" if r == 0 else "")
    return finish(fig)


# ----------------------------------------------------------------- training and cost
def plot_history(histories):
    """Loss and accuracy per epoch (train solid, val dashed) for one or several runs.

    Args:
        histories: ``{name: History or list of row dicts}`` (or one of them); rows hold
            ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``.
    """
    if not isinstance(histories, Mapping):
        histories = {"run": histories}
    fig, axes = figure(1, 2, (4.2, 3.2))
    for k, (name, h) in enumerate(histories.items()):
        rows = list(getattr(h, "rows", h))
        for ax, key in ((axes[0, 0], "loss"), (axes[0, 1], "acc")):
            for split, style in (("train", "-"), ("val", "--")):
                pts = [(r.get("epoch", j), r[f"{split}_{key}"]) for j, r in enumerate(rows)
                       if r.get(f"{split}_{key}") is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{k}", marker=".", label=f"{name} {split}")
    axes[0, 0].set(xlabel="epoch", ylabel="loss")
    axes[0, 1].set(xlabel="epoch", ylabel="accuracy")
    axes[0, 1].legend()
    return finish(fig)


_REFERENCE = ("backbone", "frozen", "frozen-backbone", "linear", "none")


def plot_cost(bench_result):
    """Paper Fig. 18-19: inference latency and peak memory vs prompt length p, relative to the
    frozen backbone, for "vpt-shallow", "vpt-deep" and "vpt-deep-prefix".

    Args:
        bench_result: ``{"infer": [{"variant", "p", "latency_ms", "peak_mem_mb", "ratio"}, ...]}``
            or the list of rows; rows of variant "backbone"/"frozen"/"linear" (or p=0) are the
            reference; ``ratio`` is latency / reference latency.
    """
    rows = bench_result["infer"] if isinstance(bench_result, Mapping) else list(bench_result)
    ref = [r for r in rows if r["variant"] in _REFERENCE or r.get("p", 0) == 0]
    ref_ms = ref[0].get("latency_ms") if ref else None
    ref_mb = next((r["peak_mem_mb"] for r in ref if r.get("peak_mem_mb")), None)
    fig, axes = figure(1, 2, (4.2, 3.2))
    for k, v in enumerate(dict.fromkeys(r["variant"] for r in rows if r["variant"] not in _REFERENCE)):
        pts = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["p"])
        lat = [r["ratio"] if r.get("ratio") is not None else r["latency_ms"] / (ref_ms or 1) for r in pts]
        axes[0, 0].plot([r["p"] for r in pts], lat, marker="o", color=f"C{k}", label=v)
        mem = [(r["p"], r["peak_mem_mb"] / (ref_mb or 1)) for r in pts if r.get("peak_mem_mb")]
        if mem:
            axes[0, 1].plot(*zip(*mem), marker="o", color=f"C{k}", label=v)
    if not axes[0, 1].lines:
        axes[0, 1].text(0.5, 0.5, "peak memory not measured\n(CPU run)", ha="center",
                        va="center", transform=axes[0, 1].transAxes)
    unit = "x frozen backbone" if ref else "(absolute)"
    axes[0, 0].set(xlabel="prompt length p", ylabel=f"latency {unit}", title="Fig. 18: latency")
    axes[0, 1].set(xlabel="prompt length p", ylabel=f"peak memory {unit if ref_mb else 'MB'}",
                   title="Fig. 19: peak memory")
    for ax in axes[0]:
        if ref:
            ax.axhline(1.0, color="gray", ls=":", lw=1)
        if ax.lines:
            ax.legend()
    return finish(fig)


def plot_results_table(results: Sequence[Mapping]):
    """Accuracy vs trainable parameters (log x) and mean accuracy per method (cf. Fig. 1, Table 1).

    Args:
        results: dicts with ``method``, ``task``, ``accuracy`` and ``trainable`` (parameter count).
    """
    if not results:
        raise DataError("plot_results_table got no results")
    methods = list(dict.fromkeys(r["method"] for r in results))
    tasks = list(dict.fromkeys(r.get("task", "") for r in results))
    fig, axes = figure(1, 2, (4.4, 3.4))
    for k, m in enumerate(methods):
        rs = [r for r in results if r["method"] == m]
        axes[0, 0].scatter([max(r["trainable"], 1) for r in rs], [r["accuracy"] for r in rs],
                           color=f"C{k % 10}", label=m)
        axes[0, 1].bar(k, np.mean([r["accuracy"] for r in rs]), color=f"C{k % 10}")
    axes[0, 0].set(xscale="log", xlabel="trainable parameters", ylabel="accuracy")
    axes[0, 0].legend()
    axes[0, 1].set_xticks(range(len(methods)), methods, rotation=45, ha="right")
    axes[0, 1].set(ylabel=f"mean accuracy over {len(tasks)} task(s)")
    return finish(fig)
