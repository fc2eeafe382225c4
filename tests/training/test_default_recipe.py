"""The default recipe trains stably: every method, every offline task, the default TrainConfig.

Issue #16: with the old defaults VPT-deep and linear losses climbed to 20-70 in the first
epochs. The yardstick is the loss at initialisation (max of the first step's loss and ln C):
no step of a default run may exceed 1.5x it. Small sizes keep it fast; the warm-up still ends
and the peak learning rate is reached (epoch 1 of 3).
"""
import warnings

import pytest

import vpt_explore as vx

TASKS = [t.name for t in vx.list_tasks() if t.group != "upstream" and t.offline]
METHODS = list(vx.methods_for("vit"))  # every method make_model builds on a ViT


@pytest.fixture(scope="module")
def backbone():
    return vx.load_backbone()


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_default_config_never_spikes(backbone, task):
    train = vx.load_task(task, "train", backbone, n=96)
    worst = []
    for method in METHODS:
        model = vx.make_model(method, backbone, train.num_classes, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hist = vx.train(model, train, None, vx.TrainConfig(epochs=3, progress=False))
        ratio = max(s["loss"] for s in hist.steps) / hist.loss_at_init
        worst.append((round(ratio, 2), method, hist.warnings))
        assert hist.status == "completed", (task, method, hist.status, hist.message)
    bad = [w for w in worst if w[0] > 1.5]
    assert not bad, f"{task}: default runs whose loss rose above 1.5x its start: {bad}"
