"""The shipped models of notebooks 07/08 (PRECOMPUTED): they load, score what their metadata says, and
refuse another backbone or resolution with a message that names both."""
import pytest
import torch

import vpt_explore as vx
from vpt_explore.apps import precomputed, resolution
from tests.conftest import assert_words


@pytest.fixture(scope="module")
def vit():
    return precomputed.backbone()


def test_every_shipped_model_is_there_and_reaches_its_recorded_test_accuracy(vit):
    shipped = precomputed.available()
    assert ("shapes-loc", "vpt-deep") in shipped and ("shapes-loc", "linear") in shipped
    for (task, method), path in shipped.items():
        model, info = precomputed.load(task, method, vit)
        assert info["task"] == task and info["img_size"] == "56" and info["command"] == precomputed.COMMAND
        test = vx.load_task(task, "test", vit, n=int(info["n_test"]))
        acc = vx.evaluate(model, test)["acc"]
        assert acc == pytest.approx(float(info["test_acc"]), abs=0.01), (task, method)  # bf16 training, fp32 eval
        trained = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("vit."))
        assert path.stat().st_size < 4 * trained + 64_000  # only what the method trained, not the backbone


def test_vpt_deep_file_holds_one_prompt_set_per_block(vit):
    model, _ = precomputed.load("shapes-loc", "vpt-deep", vit)
    assert model.method == "vpt-deep" and len(model.prompt_blocks) == len(vit.blocks) == 12
    assert tuple(model.layer_prompts(0).shape) == (10, 384)
    assert sum(model.layer_prompts(i).numel() for i in range(12)) == 46_080


def test_another_resolution_or_backbone_is_refused_clearly():
    with pytest.raises(vx.PromptFileError) as e:
        precomputed.load("shapes-loc", "vpt-deep", vx.load_backbone("dinov2-s14-offline", img_size=84))
    assert_words(e.value, ["fingerprint", "dinov2-s14-offline"])
    with pytest.raises(vx.PromptFileError) as e:
        precomputed.load("shapes-loc", "linear", vx.load_backbone("tiny-dino"))
    assert_words(e.value, ["depth 12, d=384", "tiny-dino"])


def test_unknown_pair_and_missing_file_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(vx.ConfigError) as e:
        precomputed.load("count", "full")
    assert_words(e.value, ["('count', 'full')", "shapes-loc"])
    monkeypatch.setattr(precomputed, "FOLDER", tmp_path)
    with pytest.raises(vx.MissingFileError) as e:
        precomputed.load("shapes-loc", "linear", torch.nn.Identity())
    assert_words(e.value, ["missing", "python -m vpt_explore precompute"])


def test_resolution_table_rates_accuracy_per_extra_second():
    rows = [{"img_size": 56, "patches": 16, "method": "vpt-deep", "test_acc": 70.0, "train_seconds": 100.0,
             "images_per_s": 80.0},
            {"img_size": 84, "patches": 36, "method": "vpt-deep", "test_acc": 80.0, "train_seconds": 300.0,
             "images_per_s": 27.0}]
    text = resolution.format_rows(rows)
    assert "+0.0500 pt/s" in text and text.count("vpt-deep") == 2
    assert vx.ConfigError is not None
    with pytest.raises(vx.ConfigError) as e:
        resolution.run(task="count", sizes=(50,), methods=("linear",))
    assert_words(e.value, ["img_size=50", "multiple of"])
