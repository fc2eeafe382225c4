"""Probes: shapes, shares that sum to 1, hooks always removed, outputs unchanged."""
import numpy as np
import pytest
import torch

import vpt_explore as vx
from tests.conftest import small_vit
from vpt_explore.analysis import attributions, probes


def _prompted(layers="deep", length=4, **vit_kw):
    vit = small_vit(depth=3, **vit_kw)
    cfg = vx.PromptConfig(length=length, layers=layers)
    return vx.PromptedViT(vit, cfg, num_classes=5, seed=0).eval()


def _hook_counts(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}


def _fused(model):
    return [blk.attn.fused_attn for blk in probes._backbone(model).blocks]


@pytest.fixture
def x():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("make", [lambda: _prompted(), lambda: _prompted(reg_tokens=2),
                                  lambda: small_vit(depth=3)])
def test_cls_per_layer_shapes_and_last_entry(make, x):
    model = make()
    Z = probes.cls_per_layer(model, x)
    assert Z.shape == (3, 4, 64)
    vit = probes._backbone(model)
    tokens = model.forward_tokens(x)[0] if hasattr(model, "forward_tokens") else vit.forward_features(x)
    assert torch.allclose(vit.norm(Z[:, -1]), tokens[:, 0], atol=1e-5)


def test_cls_per_layer_without_cls_token(x):
    vit = small_vit(depth=3, class_token=False, global_pool="avg")
    with pytest.raises(vx.ConfigError, match="token='image'"):
        probes.cls_per_layer(vit, x)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=4, pool="image"), num_classes=5).eval()
    Z = probes.cls_per_layer(model, x, token="image")
    assert Z.shape == (3, 4, 64) and torch.isfinite(Z).all()


@pytest.mark.parametrize("kw", [dict(), dict(reg_tokens=2), dict(layers="shallow"),
                                dict(layers=(1, 2)), dict(length=0)])
def test_attention_shares_sum_to_one(kw, x):
    model = _prompted(**kw)
    s = probes.attention_to_prompts(model, x)
    L, H = 3, 2
    for key in ("prefix", "prompt", "patch"):
        assert s[key].shape == (L, H)
    assert np.allclose(s["prefix"] + s["prompt"] + s["patch"], 1.0, atol=1e-5)
    assert s["patch_maps"].shape == (3, L, H, 8, 8)
    p = model.cfg.length
    expected = [p if i >= min(model.prompt_blocks, default=L) else 0 for i in range(L)]
    assert s["num_prompts"] == expected
    for i, n in enumerate(expected):
        assert (s["prompt"][i] > 0).all() if n else (s["prompt"][i] == 0).all()
    assert s["per_prompt"].shape == (L, H, p) and s["per_prompt_all"].shape == (L, p)
    # per-prompt [CLS] attention adds up to the prompt share
    got = np.nan_to_num(s["per_prompt"]).sum(-1)
    assert np.allclose(got, s["prompt"], atol=1e-5)


def test_prompt_slot_after_gives_same_shares(x):
    model = _prompted()
    before = probes.attention_to_prompts(model, x)
    model.prompt_slot = "after"
    after = probes.attention_to_prompts(model, x)
    for key in ("prefix", "prompt", "patch", "per_prompt", "patch_maps"):
        assert np.allclose(before[key], after[key], atol=1e-5), key


def test_add_location_has_no_prompt_tokens(x):
    vit = small_vit(depth=3)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=1, location="add"), num_classes=5).eval()
    s = probes.attention_to_prompts(model, x)
    assert s["num_prompts"] == [0, 0, 0] and (s["prompt"] == 0).all()


def test_record_attention_restores_and_does_not_change_outputs(x):
    model = _prompted()
    hooks, fused = _hook_counts(model), _fused(model)
    params = {k: (v.clone(), v.requires_grad) for k, v in model.named_parameters()}
    ref = model(x)
    with probes.record_attention(model) as rec:
        assert not any(_fused(model))
        probed = model(x)
    assert torch.allclose(ref, probed, atol=1e-5)
    assert len(rec.maps) == 3 and rec.maps[0].shape == (3, 2, 1 + 4 + 64, 1 + 4 + 64)
    assert torch.allclose(rec.maps[1].sum(-1), torch.ones(3, 2, 69), atol=1e-5)
    assert rec.layout(0).prompts == range(1, 5) and rec.layout(0).patches == range(5, 69)
    assert _hook_counts(model) == hooks and _fused(model) == fused
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k][0]) and v.requires_grad == params[k][1]


def test_hooks_removed_when_forward_raises(x):
    model = _prompted()
    hooks, fused = _hook_counts(model), _fused(model)
    bad = torch.randn(2, 3, 20, 20)
    with pytest.raises(vx.DataError):
        with probes.record_attention(model):
            model(bad)
    assert _hook_counts(model) == hooks and _fused(model) == fused
    for probe in (probes.cls_per_layer, probes.attention_to_prompts):
        with pytest.raises(vx.DataError):
            probe(model, bad)
        assert _hook_counts(model) == hooks and _fused(model) == fused
    vit = small_vit(depth=3)
    hooks, fused = _hook_counts(vit), _fused(vit)
    with pytest.raises(AssertionError):                 # timm's own image-size check
        probes.attention_to_prompts(vit, bad)
    with pytest.raises(RuntimeError, match="boom"):    # an error after some hooks fired
        with probes.record_attention(vit):
            vit(x)
            raise RuntimeError("boom")
    assert _hook_counts(vit) == hooks and _fused(vit) == fused


@pytest.mark.parametrize("probe", [probes.cls_per_layer, probes.attention_to_prompts])
def test_hooks_removed_when_a_block_raises_mid_forward(probe, x):
    model = _prompted()
    hooks, fused = _hook_counts(model), _fused(model)

    def boom(_m, _args):
        raise RuntimeError("boom in block 1")

    handle = model.vit.blocks[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            probe(model, x)
    finally:
        handle.remove()
    assert _hook_counts(model) == hooks and _fused(model) == fused


def test_measurement_restores_train_mode(x):
    model = _prompted()
    model.train()
    flags = [m.training for m in model.modules()]
    probes.attention_to_prompts(model, x)
    probes.cls_per_layer(model, x)
    assert [m.training for m in model.modules()] == flags


@pytest.mark.parametrize("layers", ["shallow", "deep"])
def test_rollout_shape(layers, x):
    model = _prompted(layers=layers)
    with torch.no_grad(), probes.record_attention(model) as rec:
        model(x)
    roll = probes.attention_rollout(rec)
    assert roll.shape == (3, 8, 8) and torch.isfinite(roll).all() and (roll >= 0).all()


# ----------------------------------------------------------------- attributions
def test_integrated_gradients_completeness(x):
    model = _prompted()
    hooks = _hook_counts(model)
    a = attributions.attributions(model, x, 2, method="ig", n_steps=32)
    assert a.shape == (3, 32, 32) and torch.isfinite(a).all() and a.abs().sum() > 0
    with torch.no_grad():
        gap = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    assert torch.allclose(a.sum((1, 2)), gap, atol=0.05 * gap.abs().max() + 1e-4)
    assert _hook_counts(model) == hooks
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_other_pixel_attributions(method, x):
    a = attributions.attributions(small_vit(depth=2), x[:2], [0, 1], method=method)
    assert a.shape == (2, 32, 32) and torch.isfinite(a).all() and a.abs().sum() > 0


def test_prompt_attributions(x):
    model = _prompted()
    hooks = _hook_counts(model)
    ig = attributions.prompt_attributions(model, x, 1, layer=0, n_steps=32)
    assert ig.shape == (3, 4) and torch.isfinite(ig).all() and ig.abs().sum() > 0
    P0 = model.prompts.data.clone()
    with torch.no_grad():
        full = model(x)[:, 1]
        model.prompts.data[0] = 0          # zero the block-0 prompts only
        zeroed = model(x)[:, 1]
        model.prompts.data.copy_(P0)
    gap = full - zeroed
    assert torch.allclose(ig.sum(1), gap, atol=0.05 * gap.abs().max() + 1e-5)
    ixg = attributions.prompt_attributions(model, x, 1, layer=2, method="ixg")
    assert ixg.shape == (3, 4) and torch.isfinite(ixg).all()
    assert _hook_counts(model) == hooks
    with pytest.raises(vx.ConfigError, match="no prompt tokens"):
        attributions.prompt_attributions(_prompted(layers=(1, 2)), x, 1, layer=0)


def test_cls_per_layer_agrees_with_timms_forward_intermediates(x):
    """On a plain ViT the hooks see what timm's own forward_intermediates returns, block by block."""
    vit = small_vit(depth=3, reg_tokens=2).eval()
    with torch.no_grad():
        ours = probes.cls_per_layer(vit, x)                                  # (B, L+1, D)
        inter = vit.forward_intermediates(x, return_prefix_tokens=True, norm=False, output_fmt="NLC",
                                           intermediates_only=True)
    theirs = torch.stack([prefix[:, 0] for _patches, prefix in inter], dim=1)  # (B, L, D) [CLS]
    assert torch.allclose(ours[:, 1:], theirs, atol=1e-6)


def test_attention_maps_agree_with_timms_attention_extract(x):
    """The weights record_attention reads equal timm.utils.AttentionExtract's on a plain ViT."""
    from timm.utils import AttentionExtract

    vit = small_vit(depth=2).eval()
    with torch.no_grad(), probes.record_attention(vit) as rec:
        vit(x)
    for blk in vit.blocks:
        blk.attn.fused_attn = False                                          # fx traces this branch
    theirs = list(AttentionExtract(vit, method="fx")(x).values())            # per block (B, H, N, N)
    assert len(theirs) == 2 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(rec.maps, theirs))
