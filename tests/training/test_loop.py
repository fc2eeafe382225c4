"""Training loop, baselines, prompt files."""
import threading

import pytest
import timm
import torch

import vpt_explore as vx
from tests.conftest import assert_words, small_vit, toy_data


FAST = vx.TrainConfig(epochs=3, batch_size=16, progress=False, warmup_epochs=0.5)


@pytest.mark.parametrize("method", list(vx.methods_for("vit")) + ["partial-2", "mlp-1"])
def test_every_method_trains_and_backbone_stays_shared(method):
    vit = small_vit(depth=2)
    ref = {k: v.clone() for k, v in vit.state_dict().items()}
    model = vx.make_model(method, vit, 3, length=2, members=2)
    data = toy_data()
    hist = vx.train(model, data, data, FAST.replace(base_lr=None))
    assert hist.status == "completed" and len(hist.rows) == 3
    assert hist.rows[-1]["train_loss"] < hist.rows[0]["train_loss"] + 1e-6 or hist.best_val_acc > 0.5
    assert hist.trainable == model.parameter_report()["trainable"]
    for k, v in vit.state_dict().items():  # the caller's backbone is never modified
        assert torch.equal(v, ref[k]), (method, k)
    assert hist.cached_features == (method in ("linear", "mlp-3", "mlp-1"))


def test_linear_probe_learns_toy_task_with_cached_features():
    vit = small_vit(depth=2)
    model = vx.make_model("linear", vit, 3)
    hist = vx.train(model, toy_data(), toy_data(seed=1), vx.TrainConfig(epochs=15, batch_size=16,
                                                                      base_lr=2.0, progress=False))
    assert hist.cached_features and hist.best_val_acc >= 0.9


def test_cached_and_uncached_linear_probe_agree():
    vit = small_vit(depth=2)
    data = toy_data()
    out = []
    for cache in (True, False):
        model = vx.make_model("linear", vit, 3)
        torch.manual_seed(0)
        model.head.reset_parameters()
        vx.train(model, data, None, FAST.replace(cache_features=cache))
        out.append(model.head.weight.detach().clone())
    assert torch.allclose(out[0], out[1], atol=1e-5)


@pytest.mark.parametrize("method", ["linear", "vpt-deep", "bias", "full"])
def test_same_seed_same_metrics(method):
    vit = small_vit(depth=2)
    runs = []
    for _ in range(2):
        model = vx.make_model(method, vit, 3, length=2, seed=0)
        runs.append(vx.train(model, toy_data(), toy_data(seed=2), FAST).rows)
    timing = ("seconds", "train_seconds")
    assert runs[0] == [dict(r, **{k: runs[0][i][k] for k in timing}) for i, r in enumerate(runs[1])]


def test_sgd_for_prompts_adamw_for_backbone_and_lr_scaling():
    vit = small_vit(depth=1)
    opt, lr = vx.training.recipe.make_optimizer(vx.make_model("vpt-deep", vit, 2), vx.TrainConfig(batch_size=64, base_lr=8.0), "vpt-deep")
    assert isinstance(opt, torch.optim.SGD) and lr == 2.0 and opt.param_groups[0]["momentum"] == 0.9
    opt, _ = vx.training.recipe.make_optimizer(vx.make_model("bias", vit, 2), vx.TrainConfig(), "bias")
    assert isinstance(opt, torch.optim.AdamW)
    assert vx.training.recipe.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert vx.training.recipe.lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert vx.training.recipe.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_best_epoch_weights_are_restored():
    vit = small_vit(depth=2)
    model = vx.make_model("vpt-deep", vit, 3, length=2)
    seen = {}

    def spy(event, hist, m):
        if event == "epoch":
            seen[hist.rows[-1]["epoch"]] = {k: v.detach().clone() for k, v in m.named_parameters() if v.requires_grad}
    hist = vx.train(model, toy_data(), toy_data(seed=3), FAST.replace(epochs=4), callbacks=[spy])
    best = seen[hist.best_epoch]
    for k, v in model.named_parameters():
        if v.requires_grad:
            assert torch.equal(v, best[k])


def test_stop_event_and_callback_keep_what_was_trained():
    vit = small_vit(depth=2)
    model = vx.make_model("vpt-deep", vit, 3, length=2)
    stop = threading.Event()

    def press_stop(event, hist, m):
        if event == "epoch" and hist.rows[-1]["epoch"] == 2:
            stop.set()
    hist = vx.train(model, toy_data(), toy_data(seed=3), FAST.replace(epochs=5), callbacks=[press_stop], stop=stop)
    assert hist.status == "stopped" and len(hist.rows) == 2 and hist.best_epoch in (1, 2)
    assert "epoch" in hist.message


def test_keyboard_interrupt_returns_history_with_best_weights():
    vit = small_vit(depth=2)
    model = vx.make_model("vpt-shallow", vit, 3, length=2)

    def ctrl_c(event, hist, m):
        if event == "step" and hist.steps[-1]["step"] == 7:
            raise KeyboardInterrupt
    hist = vx.train(model, toy_data(), toy_data(seed=3), FAST.replace(epochs=5), callbacks=[ctrl_c])
    assert hist.status == "interrupted" and hist.best_epoch in (1, 2) and len(hist.rows) == 2
    assert "interrupted at step 7" in hist.message


def test_nan_loss_stops_at_that_step_and_keeps_last_good_state():
    vit = small_vit(depth=2)
    model = vx.make_model("vpt-deep", vit, 3, length=2)
    good = {}

    def poison(event, hist, m):
        if event == "epoch" and hist.rows[-1]["epoch"] == 1:
            good.update({k: v.detach().clone() for k, v in m.named_parameters() if v.requires_grad})
            m.prompts.data[0, 0, 0] = float("nan")   # e.g. an lr far too high
    with pytest.warns(RuntimeWarning, match=r"loss became nan at epoch 2, step 4"):
        hist = vx.train(model, toy_data(), None, FAST.replace(epochs=3), callbacks=[poison])
    assert hist.status == "nan" and len(hist.rows) == 1
    assert torch.isfinite(model.prompts).all()
    for k, v in model.named_parameters():
        if v.requires_grad:
            assert torch.equal(v, good[k]) or k == "prompts" and torch.isfinite(v).all()


@pytest.mark.parametrize("make,words", [
    (lambda v: (vx.make_model("linear", v, 3), torch.utils.data.TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)), FAST), ["empty"]),
    (lambda v: (vx.make_model("linear", v, 3), toy_data(n=10), FAST.replace(batch_size=64)), ["batch_size=64", "10 examples"]),
    (lambda v: (vx.make_model("linear", v, 2), toy_data(classes=3), FAST), ["labels in [0, 2]", "num_classes=2", "num_classes=3"]),
])
def test_bad_training_input_fails_before_training(make, words):
    model, data, cfg = make(small_vit(depth=1))
    with pytest.raises(ValueError) as e:
        vx.train(model, data, None, cfg)
    assert_words(e.value, words)


@pytest.mark.parametrize("kw,words", [(dict(base_lr=0), ["base_lr=0", "> 0"]), (dict(base_lr=-1.0), ["base_lr=-1.0"]),
                                      (dict(epochs=0), ["epochs=0"]), (dict(optimizer="adam"), ["optimizer", "did you mean 'adamw'"]),
                                      (dict(amp="int8"), ["amp", "'bf16'"]), (dict(batch_size=0), ["batch_size=0"])])
def test_bad_train_config(kw, words):
    with pytest.raises(vx.ConfigError) as e:
        vx.TrainConfig(**kw)
    assert_words(e.value, words)


def test_unknown_method_suggests():
    with pytest.raises(vx.ConfigError, match=r"did you mean 'vpt-deep'"):
        vx.make_model("vpt_deep", small_vit(depth=1), 2)


# ---------------------------------------------------------------- prompt files
@pytest.mark.parametrize("method", ["vpt-deep", "adapter", "bias", "mlp-3", "ensemble", "sidetune"])
def test_prompt_file_round_trip(tmp_path, method):
    vit = small_vit(depth=2)
    model = vx.make_model(method, vit, 3, length=2, members=2).eval()
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_()
    x = torch.randn(2, 3, 32, 32)
    path = model.save_prompts(tmp_path / "m.safetensors")
    loaded = vx.load_model(path, vit)
    assert loaded.method == method
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert path.stat().st_size < 0.5 * sum(v.numel() * 4 for v in vit.state_dict().values()) or method == "full"


def test_prompt_file_refuses_other_backbones_and_pickles(tmp_path):
    vit = small_vit(depth=2)
    path = vx.make_model("vpt-deep", vit, 3, length=2).save_prompts(tmp_path / "p.safetensors")
    with pytest.raises(vx.PromptFileError, match=r"depth 2.*depth 3"):
        vx.PromptedViT.load_prompts(path, small_vit(depth=3))
    other = small_vit(depth=2)
    torch.nn.init.normal_(other.blocks[0].attn.qkv.weight)
    with pytest.raises(vx.PromptFileError, match="fingerprint"):
        vx.PromptedViT.load_prompts(path, other)
    pkl = tmp_path / "evil.safetensors"
    torch.save({"prompts": torch.zeros(3)}, pkl)
    with pytest.raises(vx.PromptFileError, match="pickle"):
        vx.PromptedViT.load_prompts(pkl, vit)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(vx.PromptFileError, match="truncated or corrupted"):
        vx.PromptedViT.load_prompts(cut, vit)
    with pytest.raises(vx.MissingFileError):
        vx.PromptedViT.load_prompts(tmp_path / "nope.safetensors", vit)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash in the middle of writing leaves the previous checkpoint intact."""
    from vpt_explore.model import prompt_file as files
    vit = small_vit(depth=1)
    model = vx.make_model("vpt-shallow", vit, 3, length=2)
    path = files.save_prompts(model, tmp_path / "ckpt.safetensors")
    before = path.read_bytes()
    import safetensors.torch as st

    def crash(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk died mid-write")
    monkeypatch.setattr(st, "save_file", crash)
    model.prompts.data.add_(1)
    with pytest.raises(OSError):
        files.save_prompts(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_paper_parameter_multipliers_and_storage():
    vit = timm.create_model("vit_base_patch16_224", pretrained=False)
    tasks = [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]  # VTAB-1k
    deep = vx.total_params_multiplier("vpt-deep", vit, tasks, length=50)
    lin = vx.total_params_multiplier("linear", vit, tasks)
    assert 1.0 < lin < deep < 1.2
    assert vx.total_params_multiplier("full", vit, tasks[:3]) == pytest.approx(3.0, abs=0.01)
    rows = vx.storage_table(["full", "linear", "vpt-deep"], small_vit(depth=2), 10)
    size = {r["method"]: r["vs_full"] for r in rows}
    assert size["full"] == 1.0 and size["linear"] < size["vpt-deep"] < 0.2


# ---------------------------------------------------------------- experiments
def test_sweep_follows_vtab_protocol_and_statistics():
    vit = small_vit(depth=1)
    splits = {"train": toy_data(24), "val": toy_data(12, seed=1), "trainval": toy_data(36, seed=2),
              "test": toy_data(18, seed=3), "name": "toy"}
    res = vx.sweep(["linear", "vpt-shallow"], vit, splits, base_lrs=(0.5, 2.0), lengths=(1, 3), seeds=(0, 1),
                   epochs=2, batch_size=12, progress=False, num_classes=3)
    tune = [r for r in res if r["stage"] == "tune"]
    assert len([r for r in tune if r["method"] == "linear"]) == 2       # lengths only for prompts
    assert len([r for r in tune if r["method"] == "vpt-shallow"]) == 4
    summ = {s["method"]: s for s in res.summary()}
    best = max((r for r in tune if r["method"] == "vpt-shallow"), key=lambda r: r["val_acc"])
    assert summ["vpt-shallow"]["base_lr"] == best["base_lr"] and summ["vpt-shallow"]["seeds"] == 2
    assert "vpt-shallow" in res.table()
    res.plot().savefig(__import__("io").BytesIO())
    w = vx.wilcoxon([0.9, 0.8, 0.7, 0.95, 0.6, 0.85], [0.8, 0.7, 0.72, 0.9, 0.5, 0.8])
    assert 0 < w["pvalue"] < 0.2 and w["n"] == 6
    t = vx.welch([0.9, 0.91, 0.92], [0.5, 0.52, 0.49])
    assert t["pvalue"] < 0.001 and t["statistic"] > 0
    with pytest.raises(vx.ConfigError, match="paired"):
        vx.wilcoxon([1.0, 2.0], [1.0])


def test_make_model_keeps_a_layer_tuple_for_deep_and_refuses_it_for_shallow():
    vit = small_vit(depth=4)
    assert vx.make_model("vpt-deep", vit, 2, layers=(1, 2)).prompt_blocks == (1, 2)
    assert vx.make_model("vpt-deep", vit, 2, prompt=vx.PromptConfig(layers=(3,))).prompt_blocks == (3,)
    assert vx.make_model("vpt-deep", vit, 2).prompt_blocks == (0, 1, 2, 3)
    with pytest.raises(vx.ConfigError, match=r"contradicts method='vpt-shallow'"):
        vx.make_model("vpt-shallow", vit, 2, layers=(1, 2))


def test_default_sgd_lr_scales_with_width():
    from vpt_explore.methods.registry import default_base_lr
    assert default_base_lr("linear", "sgd", 384) == pytest.approx(default_base_lr("linear", "sgd", 128) / 3)
    assert default_base_lr("full", "adamw", 768) == default_base_lr("full", "adamw", 128)


# ---------------------------------------------------------------- edge cases: defaults, files, lr scaling
class _Plain(torch.utils.data.Dataset):
    """A dataset that is not in memory as tensors (like files decoded from disk)."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def test_num_workers_is_used(monkeypatch):
    made = []

    class Spy(torch.utils.data.DataLoader):
        def __init__(self, *a, **kw):
            made.append(kw.get("num_workers"))
            super().__init__(*a, **{**kw, "num_workers": 0})  # no worker processes in the test itself
    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    model = vx.make_model("vpt-shallow", small_vit(depth=1), 3, length=2)
    hist = vx.train(model, _Plain(toy_data(n=16)), None,
                    vx.TrainConfig(epochs=1, batch_size=8, progress=False, num_workers=2))
    assert hist.status == "completed" and made and set(made) == {2}


def test_training_error_when_training_cannot_start_or_fails_at_once():
    vit = small_vit(depth=1)
    model = vx.make_model("vpt-shallow", vit, 3, length=2)
    with torch.no_grad():
        model.prompts[0, 0, 0] = float("nan")
    with pytest.raises(vx.TrainingError, match=r"'prompts' holds NaN/inf before training"):
        vx.train(model, toy_data(n=16), None, vx.TrainConfig(epochs=1, batch_size=8, progress=False))
    x, y = toy_data(n=16).tensors
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    model = vx.make_model("vpt-shallow", vit, 3, length=2)
    with pytest.raises(vx.TrainingError, match=r"at the first step, before any update"):
        vx.train(model, torch.utils.data.TensorDataset(x, y), None,
                 vx.TrainConfig(epochs=1, batch_size=16, progress=False))
