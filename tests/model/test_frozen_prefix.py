"""FrozenPrefix: training on cached block-(k-1) outputs equals training the PromptedViT on images."""
import pytest
import torch
import torch.nn.functional as F

import vpt_explore as vx
from vpt_explore.errors import ConfigError
from vpt_explore.model.frozen_prefix import FrozenPrefix

from tests.conftest import assert_words, small_vit, toy_data

TOL = 1e-5


def _model(vit, **cfg):
    cfg = {"length": 4, "layers": (2, 3), **cfg}
    return vx.PromptedViT(vit, vx.PromptConfig(**cfg), num_classes=3, seed=0)


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("cfg, prefix_path", [
    (dict(), True),                                   # blocks 2..3 of 4, pool cls: exact prefix path
    (dict(pool="image"), True),
    (dict(layers=(1, 3)), False),                     # not a run to the last block: token path
    (dict(pool="global"), False),
    (dict(location="add", length=1), False),
])
def test_logits_and_gradients_equal_the_uncached_model(vit, images, cfg, prefix_path):
    model = _model(vit, **cfg).train()
    fp = FrozenPrefix(model)
    assert fp.start == model.prompt_blocks[0] and model.uses_prefix_path() is prefix_path
    tokens = fp.encode(images)                                           # (B, R+m, D)
    assert tokens.shape == (4, 1 + 64, 64) and not tokens.requires_grad
    y = torch.tensor([0, 1, 2, 0])
    out = {}
    for name, fwd in (("images", lambda: model(images)), ("tokens", lambda: fp(tokens))):
        model.zero_grad(set_to_none=True)
        logits = fwd()
        F.cross_entropy(logits, y).backward()
        out[name] = logits.detach(), _grads(model)
    assert (out["images"][0] - out["tokens"][0]).abs().max() < TOL
    assert out["images"][1].keys() == out["tokens"][1].keys() == {"prompts", "head.weight", "head.bias"}
    for k, g in out["images"][1].items():
        assert torch.allclose(g, out["tokens"][1][k], atol=1e-6), k
    model.eval()                                                         # eval: the token path
    with torch.no_grad():
        assert (model(images) - fp(tokens)).abs().max() < TOL


def test_vx_train_on_cached_tokens_trains_the_model():
    vit = small_vit(depth=4, num_classes=3)
    model = vx.make_model("vpt-deep", vit, 3, length=2, layers=(2, 3), seed=0)
    fp = FrozenPrefix(model)
    assert fp.method == model.method and fp.num_classes == 3 and fp.embed_dim == 64
    train_set, val_set = toy_data(48), toy_data(24, seed=1)
    train_tokens, val_tokens = fp.cache(train_set, batch_size=20), fp.cache(val_set)
    assert train_tokens.tensors[0].shape == (48, 65, 64)
    assert torch.equal(train_tokens.tensors[1], train_set.tensors[1])
    before = model.prompts.detach().clone()
    hist = vx.train(fp, train_tokens, val_tokens, vx.TrainConfig(epochs=2, batch_size=16, base_lr=1.0,
                                                                  progress=False))
    assert hist.status == "completed" and not torch.equal(before, model.prompts)
    # the PromptedViT holds the trained prompts and gives the same accuracy on the images
    on_images = vx.evaluate(model, val_set)
    on_tokens = vx.evaluate(fp, val_tokens)
    assert on_images["acc"] == pytest.approx(on_tokens["acc"])
    assert on_images["loss"] == pytest.approx(on_tokens["loss"], abs=1e-5)


def test_cache_reads_datasets_and_loaders_alike(vit):
    fp = FrozenPrefix(_model(vit))
    data = toy_data(10)
    direct = fp.cache(data, batch_size=4).tensors[0]
    loader = fp.cache(torch.utils.data.DataLoader(data, batch_size=3)).tensors[0]
    subset = fp.cache(torch.utils.data.Subset(data, list(range(10))), batch_size=4).tensors[0]
    assert torch.allclose(direct, loader, atol=1e-6) and torch.allclose(direct, subset, atol=1e-6)


@pytest.mark.parametrize("cfg, words", [
    (dict(layers="deep"), ["layers='deep'", "block 0", "under 1%", "layers=(2, 3)"]),
    (dict(layers="shallow"), ["layers='shallow'", "block 0"]),
    (dict(length=0, layers="deep"), ["length=0", "cache_features"]),
    (dict(learn_cls=True), ["learn_cls=True", "learn_cls=False"]),
])
def test_refuses_setups_where_nothing_before_the_prompts_is_frozen(vit, cfg, words):
    with pytest.raises(ConfigError) as e:
        FrozenPrefix(_model(vit, **cfg))
    assert_words(e.value, words)


def test_refuses_a_trainable_backbone_and_other_models(vit):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=2, layers=(2, 3)), num_classes=3, freeze=False)
    with pytest.raises(ConfigError) as e:
        FrozenPrefix(model)
    assert_words(e.value, ["trainable", "freeze=True"])
    with pytest.raises(ConfigError, match="PromptedViT"):
        FrozenPrefix(vit)
    with pytest.raises(ConfigError, match="batch_size=0"):
        FrozenPrefix(_model(small_vit())).cache(toy_data(4), batch_size=0)


def test_refuses_images_and_stale_tokens(vit, images):
    model = _model(vit)
    fp = FrozenPrefix(model)
    with pytest.raises(ConfigError) as e:
        fp(images)
    assert_words(e.value, ["(B, 65, 64)", "(4, 3, 32, 32)", ".cache()", "PromptedViT itself"])
    tokens = fp.encode(images)
    fp(tokens)
    with torch.no_grad():
        vit.blocks[3].mlp.fc1.weight.add_(1.0)        # after the cached blocks: the cache still holds
    fp(tokens)
    with torch.no_grad():
        vit.blocks[1].mlp.fc1.weight.add_(1.0)        # a cached block changed: refuse
    with pytest.raises(ConfigError, match=r"blocks 0\.\.1 changed"):
        fp(tokens)
    fp(fp.encode(images))                             # cached again: fine


def test_encode_is_fp32_and_eval_mode_even_inside_autocast(vit, images):
    model = _model(vit, layers=(3,))
    fp = FrozenPrefix(model)
    plain = fp.encode(images)
    vit.train()                                         # e.g. a user's stray .train() on the backbone
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = fp.encode(images)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)
    assert vit.training                                 # restored
