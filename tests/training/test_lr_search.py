"""base_lr="auto" (the short validation search) and the loss-spike warning."""
import math
import warnings

import pytest
import torch

import vpt_explore as vx
from vpt_explore.training.loop import find_base_lr
from vpt_explore.training.lr_search import LRSearch, search_grid

from tests.conftest import assert_words, small_vit, toy_data


def test_search_grid_is_the_papers_grid_around_the_default():
    assert search_grid(1.0, "sgd") == [5.0, 2.5, 1.0, 0.5, 0.25]
    assert search_grid(8e-3, "adamw") == [0.025, 0.01, 0.005, 0.0025]  # the paper grid x 1e-3
    assert search_grid(0.1, "sgd") == [0.5, 0.25, 0.1, 0.05, 0.025]    # extended below 0.05


def test_auto_is_a_valid_base_lr_and_other_strings_are_not():
    assert vx.TrainConfig(base_lr="auto").base_lr == "auto"
    with pytest.raises(vx.ConfigError) as e:
        vx.TrainConfig(base_lr="fast")
    assert_words(e.value, ["base_lr", "'fast'", "'auto'", "None"])


def test_search_restores_the_model_and_reports_every_candidate():
    vit = small_vit(num_classes=3)
    model = vx.make_model("vpt-deep", vit, 3, length=2)
    before = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    data = toy_data(40)
    s = find_base_lr(model, data, toy_data(20, seed=1), vx.TrainConfig(epochs=2, batch_size=8, progress=False),
                     grid=[1.0, 0.1])
    assert isinstance(s, LRSearch) and [r["base_lr"] for r in s.rows] == [1.0, 0.1]
    assert s.best in (1.0, 0.1) and s.seconds > 0
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["loss_ratio"] > 0 for r in s.rows)
    for k, v in model.named_parameters():
        if v.requires_grad:
            assert torch.equal(v, before[k]), k
    assert "<- picked" in s.table()


def noisy_labels(n=48, classes=3, seed=0):
    """toy_data with shuffled labels: nothing to learn, so a huge step can only overshoot."""
    x, y = toy_data(n, classes, seed).tensors
    return torch.utils.data.TensorDataset(x, y[torch.randperm(n, generator=torch.Generator().manual_seed(seed))])


def test_search_prefers_calm_candidates_over_spiking_ones():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    s = find_base_lr(model, noisy_labels(40), noisy_labels(20, seed=1),
                     vx.TrainConfig(epochs=2, batch_size=8, warmup_epochs=0.0, progress=False), grid=[5000.0, 0.01])
    wild = s.rows[0]
    assert wild["loss_ratio"] > 1.5 or wild["status"] != "completed"
    assert s.best == 0.01


def test_train_with_auto_records_the_search_and_uses_its_pick():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    hist = vx.train(model, toy_data(40), toy_data(20, seed=1),
                    vx.TrainConfig(epochs=2, batch_size=8, base_lr="auto", progress=False))
    assert hist.lr_search is not None and hist.base_lr == pytest.approx(hist.lr_search.best)


def test_auto_without_enough_data_to_split_is_a_clear_error():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    with pytest.raises(vx.ConfigError) as e:
        vx.train(model, toy_data(9), None, vx.TrainConfig(epochs=1, batch_size=4, base_lr="auto", progress=False))
    assert_words(e.value, ["base_lr='auto'", "9 examples", "20", "val_data"])


def test_auto_without_val_holds_out_part_of_train():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    hist = vx.train(model, toy_data(40), None, vx.TrainConfig(epochs=1, batch_size=8, base_lr="auto", progress=False))
    assert hist.lr_search is not None and len(hist.lr_search.rows) >= 2


def test_a_spiking_loss_is_reported_in_history_and_as_a_warning():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = vx.train(model, noisy_labels(48), None, vx.TrainConfig(epochs=3, batch_size=8, base_lr=2000.0,
                                                                       warmup_epochs=0.0, progress=False))
    assert any(w.startswith("loss spiked") for w in hist.warnings), hist.warnings
    assert any("loss spiked" in str(w.message) for w in caught)


def test_a_calm_run_has_no_spike_warning():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    hist = vx.train(model, toy_data(48), None, vx.TrainConfig(epochs=2, batch_size=8, base_lr=0.01, progress=False))
    assert hist.loss_at_init == pytest.approx(max(hist.steps[0]["loss"], math.log(3)))
    assert max(s["loss"] for s in hist.steps) <= 1.5 * hist.loss_at_init and hist.warnings == []
    assert hist.status == "completed"


def test_a_run_that_ends_above_its_start_is_diverged_not_completed():
    vit = small_vit(num_classes=3)
    model = vx.make_model("linear", vit, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hist = vx.train(model, noisy_labels(48), None, vx.TrainConfig(epochs=2, batch_size=8, base_lr=5000.0,
                                                                       warmup_epochs=0.0, progress=False))
    assert hist.status in ("diverged", "nan"), hist.status
    if hist.status == "diverged":
        assert "lower base_lr" in hist.message and "base_lr='auto'" in hist.message
