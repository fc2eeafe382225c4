"""amp="auto" (native bf16 or fp32, with a note), a refused forced bf16, and threads="auto"."""
import pytest
import torch

import vpt_explore as vx
from vpt_explore.training import recipe, threads
from tests.conftest import assert_words


@pytest.fixture
def small():
    vit = vx.load_backbone("tiny-dino")
    data = vx.load_task("count", "train", vit, n=64)
    return vit, data


def test_auto_amp_takes_bf16_only_where_the_cpu_has_it(monkeypatch, small):
    vit, data = small
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: False)
    assert recipe.resolve_amp("auto", "cpu")[0] is None
    model = vx.make_model("vpt-deep", vit, data.num_classes, length=2)
    hist = vx.train(model, data, None, vx.TrainConfig(epochs=1, amp="auto", device="cpu", progress=False))
    assert hist.amp is None and any("no native bf16" in n for n in hist.notes)
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: True)
    assert recipe.resolve_amp("auto", "cpu") == ("bf16", "")
    hist = vx.train(model, data, None, vx.TrainConfig(epochs=1, amp="auto", device="cpu", progress=False))
    assert hist.amp == "bf16" and hist.notes == []


def test_forced_bf16_on_a_cpu_without_it_is_refused_before_training(monkeypatch, small):
    vit, data = small
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: False)
    model = vx.make_model("linear", vit, data.num_classes)
    before = model.head.weight.detach().clone()
    with pytest.raises(vx.ConfigError) as e:
        vx.train(model, data, None, vx.TrainConfig(epochs=1, amp="bf16", device="cpu", progress=False))
    assert_words(e.value, ["amp='bf16'", "no native bf16", "amp='auto'", "amp=None"])
    assert torch.equal(model.head.weight, before)


def test_bf16_and_fp32_training_steps_agree_closely(monkeypatch, small):
    """One VPT-deep step from the same start: bf16 autocast moves the prompts as fp32 does, to bf16 rounding."""
    vit, data = small
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: True)
    out = {}
    for amp in (None, "bf16"):
        model = vx.make_model("vpt-deep", vit, data.num_classes, length=2, seed=0)
        vx.train(model, data, None, vx.TrainConfig(epochs=1, base_lr=0.1, amp=amp, device="cpu", progress=False,
                                                  warmup_epochs=0.0))
        out[amp] = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    start = torch.cat([p.detach().flatten() for p in vx.make_model("vpt-deep", vit, data.num_classes, length=2,
                                                                   seed=0).parameters() if p.requires_grad])
    moved = (out[None] - start).norm()
    assert moved > 0 and (out["bf16"] - out[None]).norm() < 0.1 * moved


def test_pick_threads_leaves_busy_cores_to_others():
    assert threads.pick_threads(cores=2, busy=0.0) == 2
    assert threads.pick_threads(cores=2, busy=0.4) == 2     # less than half a core busy: take it
    assert threads.pick_threads(cores=2, busy=1.0) == 1
    assert threads.pick_threads(cores=2, busy=2.0) == 1     # never zero
    assert threads.pick_threads(cores=16, busy=3.2) == 13
    b = threads.busy_cores(0.05)
    assert b is None or 0.0 <= b <= (__import__("os").cpu_count() or 1) + 1e-6


def test_train_sets_threads_for_the_run_and_puts_them_back(small):
    vit, data = small
    before = torch.get_num_threads()
    seen = []
    model = vx.make_model("vpt-deep", vit, data.num_classes, length=2)
    hist = vx.train(model, data, None, vx.TrainConfig(epochs=1, threads=1, progress=False),
                    callbacks=[lambda event, h, m: event == "step" and seen.append(torch.get_num_threads())])
    assert set(seen) == {1} and hist.threads == 1 and torch.get_num_threads() == before
    with pytest.raises(vx.ConfigError) as e:
        vx.TrainConfig(threads=0)
    assert_words(e.value, ["threads=0", "'auto'", ">= 1"])
