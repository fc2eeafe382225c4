"""PromptedSwin: window prompts on a frozen timm Swin (paper Sec. 4.2, App. A)."""
import pytest
import timm
import torch

import vpt_explore as vx
from tests.conftest import assert_words, toy_data
from tests.model.steps import sgd_losses
from vpt_explore.model.swin_prompts import PromptedSwin, swin_prompt_count

# a 16x16 patch grid, 4x4 windows, shift 2 in every odd block; stages of width 16 and 32
SMALL = dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4,
             num_classes=5)


@pytest.fixture
def swin():
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **SMALL).eval()


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _cfg(**kw):
    return vx.PromptConfig(pool="image", **kw)


def test_zero_prompts_reproduce_the_backbone_exactly(swin, images):
    model = PromptedSwin(swin, _cfg(length=0), num_classes=None).eval()
    assert torch.equal(model(images), swin(images))
    probe = vx.make_model("vpt-deep", swin, 3, length=0).eval()
    plain = swin.forward_head(swin.forward_features(images), pre_logits=True)
    assert torch.equal(probe.forward_features(images), plain)


@pytest.mark.parametrize("layers", ["shallow", "deep", (1, 2)])
def test_prompts_act_and_only_prompts_and_head_get_gradients(swin, images, layers):
    model = PromptedSwin(swin, _cfg(length=3, layers=layers), num_classes=4, seed=0).train()
    out = model(images)
    with torch.no_grad():
        assert not torch.allclose(model.forward_features(images),
                                  swin.forward_head(swin.forward_features(images), pre_logits=True))
    out.logsumexp(1).sum().backward()
    assert all(p.grad is None for p in swin.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prompts)
    assert model.head.weight.grad.abs().sum() > 0
    assert not swin.training  # the frozen backbone stays in eval mode


def test_deep_prompts_carry_no_position(swin, images):
    """Permuting a block's prompts leaves the logits unchanged: prompts get zero position bias."""
    model = PromptedSwin(swin, _cfg(length=4, layers="deep"), num_classes=3, seed=0).eval()
    with torch.no_grad():
        before = model(images)
        for P in model.prompts:
            P.copy_(P.flip(0))
        after = model(images)
    assert torch.allclose(before, after, atol=1e-5)


def _shifted_block_setup(swin):
    model = PromptedSwin(swin, _cfg(length=2, layers="deep"), num_classes=3, seed=0).eval()
    stage, blk = model.swin_blocks[1]                       # block 1 of stage 0: shifted windows
    assert stage == 0 and any(blk.shift_size)
    x = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    P = (model.layer_prompts(1).unsqueeze(0) + 0).detach().requires_grad_(True)
    return model, blk, x, P


def test_prompts_are_seen_by_every_token_of_a_shifted_window(swin):
    model, blk, x, P = _shifted_block_setup(swin)
    out, _ = model.block(blk, x, P, keep=False)
    # corners: after the cyclic shift they sit in windows that mix three or four shift regions
    for i, j in ((0, 0), (0, 15), (15, 0), (15, 15), (7, 8)):
        (g,) = torch.autograd.grad(out[0, i, j].sum(), P, retain_graph=True)
        assert g.abs().sum() > 1e-4, (i, j)


def test_the_shift_mask_still_separates_regions_with_prompts(swin):
    """In the bottom-right shifted window, tokens (0, 0) and (15, 15) come from different regions:
    timm's -100 mask keeps them apart; the prompt columns must not move that mask."""
    model, blk, x, P = _shifted_block_setup(swin)
    for prompts in (P, None):
        out, _ = model.block(blk, x, prompts, keep=False)
        (g,) = torch.autograd.grad(out[0, 0, 0].sum(), x)
        assert g[0, 15, 15].abs().max() < 1e-8           # other region: masked
        assert g[0, 0, 1].abs().max() > 1e-4             # same region: attended


def test_shallow_prompts_live_in_the_first_stage_only(swin):
    model = PromptedSwin(swin, _cfg(length=2, layers="shallow"), num_classes=3)
    assert model.prompt_blocks == (0,)
    assert [model.carries(i) for i in range(4)] == [True, False, False, False]  # dropped at merging
    deep = PromptedSwin(swin, _cfg(length=2, layers="deep"), num_classes=3)
    assert [deep.carries(i) for i in range(4)] == [False] * 4                   # replaced every block
    assert [tuple(P.shape) for P in deep.prompts] == [(2, 16), (2, 16), (2, 32), (2, 32)]


@pytest.mark.parametrize("layers", ["shallow", "deep", (0, 3)])
def test_parameter_count_matches_the_formula(swin, layers):
    model = PromptedSwin(swin, _cfg(length=5, layers=layers), num_classes=3)
    assert model.parameter_report()["groups"]["prompts"] == swin_prompt_count(swin, 5, layers)
    assert swin_prompt_count(swin, 5, "deep") == 5 * (2 * 16 + 2 * 32)


def test_swin_b_prompt_counts():
    """Swin-B, depths 2-2-18-2, widths 128-256-512-1024: shallow 128 p, deep 12,032 p."""
    swin_b = timm.create_model("swin_base_patch4_window7_224", pretrained=False, device="meta")
    assert swin_prompt_count(swin_b, 50, "shallow") == 6_400
    assert swin_prompt_count(swin_b, 50, "deep") == 601_600 == 50 * (2 * 128 + 2 * 256 + 18 * 512 + 2 * 1024)


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep"])
def test_loss_falls_on_a_tiny_batch(swin, method):
    data = toy_data(12, classes=3)
    x, y = data.tensors
    model = vx.make_model(method, swin, 3, length=4, dropout=0.0).train()
    losses = sgd_losses(model, x, y, steps=15, lr=0.5)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("field,value,allowed", [("location", "add", "'prepend'"), ("pool", "cls", "'image'"),
                                                 ("share", "inter", "'none'"), ("init", "cls", "'random'")])
def test_settings_a_swin_cannot_honour_are_refused(swin, field, value, allowed):
    kw = {"pool": "image", field: value}
    if field == "init":
        kw["length"] = 3
    with pytest.raises(vx.ConfigError) as err:
        PromptedSwin(swin, vx.PromptConfig(**kw), num_classes=3)
    assert_words(err.value, [field, repr(value), allowed, "Swin"])
    with pytest.raises(vx.ConfigError, match="learn_cls"):
        PromptedSwin(swin, vx.PromptConfig(pool="image", learn_cls=True), num_classes=3)


@pytest.mark.parametrize("layers", ["shallow", "deep"])
def test_fused_and_explicit_window_attention_agree_with_prompts(swin, images, layers):
    """timm's WindowAttention has two paths (SDPA with a float mask, or explicit softmax); the padded
    bias and mask must reach both."""
    model = PromptedSwin(swin, _cfg(length=3, layers=layers), num_classes=3, seed=0).eval()
    out = []
    for fused in (False, True):
        for _, blk in model.swin_blocks:
            blk.attn.fused_attn = fused
        with torch.no_grad():
            out.append(model(images))
    assert torch.allclose(out[0], out[1], atol=1e-5)
