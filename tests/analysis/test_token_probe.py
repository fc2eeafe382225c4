"""The token probe (notebook 11): a linear read-out of the frozen [CLS] vs the frozen patch tokens."""
import json

import numpy as np
import pytest
import torch

import vpt_explore as vx
from tests.conftest import assert_words, small_vit
from vpt_explore.analysis import token_probe as tp


def _tokens(n, seed, prefix=1, m=9, d=8, classes=3, where=4):
    """Tokens (n, prefix + m, d) of Gaussian noise; patch ``where`` alone also carries the label's prototype."""
    rng = np.random.default_rng(seed)
    protos = 3.0 * np.random.default_rng(123).normal(size=(classes, d))   # the same classes for train and test
    y = rng.integers(0, classes, size=n)                                    # (n,)
    t = rng.normal(size=(n, prefix + m, d)).astype(np.float32)
    t[:, prefix + where] += protos[y]                                       # linear in that one token
    return t, y


def test_label_in_one_patch_token_is_found_by_patches_and_not_by_cls():
    tr, ytr = _tokens(600, 0)
    te, yte = _tokens(300, 1)
    acc = tp.probe_tokens(tr, ytr, te, yte, num_prefix=1)
    assert set(acc) == set(tp.FEATURES)
    assert acc["patches"] >= 95.0, acc                                 # the label is linear in the concatenation
    assert abs(acc["cls"] - 100 / 3) <= 10.0, acc                      # [CLS] is independent noise: chance
    assert acc["patches"] > acc["patch-mean"] > acc["cls"] - 10


def test_register_tokens_are_not_patches():
    tr, ytr = _tokens(400, 0, prefix=3)
    te, yte = _tokens(200, 1, prefix=3)
    feats = tp.features_from_tokens(tr, num_prefix=3)
    assert feats["cls"].shape == (400, 8) and feats["patch-mean"].shape == (400, 8)
    assert feats["patches"].shape == (400, 9 * 8)
    np.testing.assert_array_equal(feats["patches"][:, :8], tr[:, 3])    # grid order kept: first patch first
    assert tp.probe_tokens(tr, ytr, te, yte, num_prefix=3, features=["patches"])["patches"] >= 95.0


def test_token_features_on_a_vit_are_read_only():
    vit = small_vit(depth=2).train()
    vit.blocks[0].eval()                                               # a mixed state must come back as it was
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    feats = tp.token_features(vit, x, batch_size=2)
    assert vit.training and not vit.blocks[0].training and vit.blocks[1].training   # flags restored
    assert feats["cls"].shape == (5, 64) and feats["patch-mean"].shape == (5, 64)
    assert feats["patches"].shape == (5, 64 * 64)                     # 8x8 patches of width 64
    with torch.no_grad():
        vit.eval()
        ref = vit.forward_features(x)
    np.testing.assert_allclose(feats["cls"], ref[:, 0].numpy(), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())


def test_token_features_of_a_prompted_vit_probe_its_plain_backbone():
    vit = small_vit(depth=2)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers="deep"), num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    a, b = tp.token_features(model, x, ["cls"]), tp.token_features(vit, x, ["cls"])
    np.testing.assert_allclose(a["cls"], b["cls"], atol=1e-6)


def test_token_probe_on_a_task_returns_its_sizes():
    vit = small_vit(depth=1, dim=32)
    row = tp.token_probe(vit, "shapes-loc", n_train=64, n_test=32, features=("cls", "patches"))
    assert (row["task"], row["n_train"], row["n_test"], row["img_size"]) == ("shapes-loc", 64, 32, 32)
    assert row["dims"] == {"cls": 32, "patches": 64 * 32}
    assert all(0 <= v <= 100 for v in row["acc"].values())
    assert row["params"] == sum(p.numel() for p in vit.parameters())
    json.dumps(row)                                                    # ships as JSON


def test_format_probe_puts_the_reference_beside_the_probe():
    rows = [{"task": "shapes-loc", "backbone": "tiny-dino", "img_size": 32, "n_train": 1000, "n_test": 500,
             "acc": {"cls": 32.4, "patch-mean": 37.6, "patches": 99.8}, "source": "shipped"},
            {"task": "shapes-loc", "backbone": "no-such-backbone", "img_size": 40, "n_train": 10, "n_test": 10,
             "acc": {"patches": 50.0}}]
    text = tp.format_probe(rows)
    deep = vx.reference.cell("shapes-loc", "vpt-deep", vx.reference.scale.SMALL_REFERENCE_FILE)["mean"]
    assert "99.8" in text and "32.4" in text and f"{deep:.1f}" in text
    assert "not run" in text.splitlines()[4]                           # no reference for that backbone: no crash


@pytest.mark.parametrize("call, words", [
    (lambda: tp.features_from_tokens(np.zeros((4, 5, 2)), features=["cls", "pixels"]),
     ["features", "'pixels'", "patch-mean"]),
    (lambda: tp.features_from_tokens(np.zeros((4, 5, 2)), features="cls"), ["features='cls'", "list"]),
    (lambda: tp.features_from_tokens(np.zeros((4, 5, 2)), num_prefix=0), ["num_prefix=0", "no [CLS]"]),
    (lambda: tp.features_from_tokens(np.zeros((4, 5, 2)), num_prefix=5), ["num_prefix=5", "[0, 4]"]),
    (lambda: tp.features_from_tokens(np.zeros((4, 5))), ["tokens", "(4, 5)", "(N, R + m, D)"]),
    (lambda: tp.probe_accuracy(np.zeros((4, 3)), [0, 1, 0], np.zeros((2, 3)), [0, 1]),
     ["train_x", "(4, 3)", "3 labels"]),
    (lambda: tp.probe_accuracy(np.zeros((4, 3)), [1, 1, 1, 1], np.zeros((2, 3)), [0, 1]), ["train_y", "one class"]),
    (lambda: tp.probe_accuracy(np.zeros((4, 3)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]),
     ["train_x has 3", "test_x 2"]),
    (lambda: tp.probe_accuracy(np.zeros((4, 3)), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1], C=0), ["C=0", "> 0"]),
    (lambda: tp.token_features(small_vit(depth=1), torch.zeros(2, 3, 32, 32), batch_size=0), ["batch_size=0", ">= 1"]),
    (lambda: tp.token_features(small_vit(depth=1), torch.zeros(3, 32, 32)), ["images", "(B, C, H, W)"]),
])
def test_bad_input_names_the_field_and_value(call, words):
    with pytest.raises(vx.ConfigError) as e:
        call()
    assert_words(e.value, words)
