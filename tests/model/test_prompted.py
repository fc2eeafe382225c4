"""PromptedViT: exact equivalences, parameter counts, gradients, variants."""

import pytest
import timm
import torch
import torch.nn.functional as F

import vpt_explore as vx
from tests.conftest import assert_words, small_vit


def _step(model, images, labels, lr=0.5, opt=None):
    opt = opt or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = F.cross_entropy(model(images), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ---------------------------------------------------------------- exact equivalences
def test_zero_prompts_reproduce_backbone_exactly(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=0), num_classes=None).eval()
    assert torch.equal(model(images), vit(images))


@pytest.mark.parametrize("kw", [dict(reg_tokens=2), dict(no_embed_class=True),
                                dict(class_token=False, global_pool="avg"),
                                dict(reg_tokens=4, class_token=False, global_pool="avg")])
def test_zero_prompts_exact_for_registers_and_avg_pool(kw, images):
    vit = small_vit(**kw)
    pool = "image" if kw.get("global_pool") == "avg" else "cls"
    model = vx.PromptedViT(vit, vx.PromptConfig(length=0, pool=pool), num_classes=None).eval()
    assert torch.equal(model(images), vit(images))


@pytest.mark.parametrize("layers", ["shallow", "deep", (1, 2)])
def test_prompt_position_after_pos_embed_does_not_matter(vit, images, layers):
    """[x0, P, E0] and [x0, E0, P] give the same output: prompts carry no position (Sec. 3.2)."""
    model = vx.PromptedViT(vit, vx.PromptConfig(length=6, layers=layers), num_classes=3, seed=0).eval()
    before = model(images)
    model.prompt_slot = "after"
    after = model(images)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    # ... but the prompts do matter
    model.prompt_slot = "before"
    model.prompts.data.normal_(0, 3)
    assert (before - model(images)).abs().max() > 1e-4


def test_avg_pool_backbone_never_pools_prompts(images):
    vit = small_vit(reg_tokens=2, class_token=False, global_pool="avg")
    model = vx.PromptedViT(vit, vx.PromptConfig(length=5, pool="image"), num_classes=None, seed=0).eval()
    tokens, p = model.forward_tokens(images)
    assert p == 5 and tokens.shape[1] == 2 + 5 + 64
    expected = vit.fc_norm(tokens[:, 2 + 5:].mean(1))
    assert torch.allclose(model.forward_features(images), expected)


def test_deep_prompts_replace_not_accumulate(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers="deep"), num_classes=2).eval()
    tokens, p = model.forward_tokens(images)
    assert tokens.shape == (4, 1 + 3 + 64, 64) and p == 3


def test_training_vpt_deep_returns_only_image_tokens_on_the_prefix_path(vit, images):
    """The prefix step never computes the prompt tokens' outputs; with cls_only only [CLS]'s."""
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers="deep"), num_classes=2).train()
    tokens, p = model.forward_tokens(images)
    assert tokens.shape == (4, 1 + 64, 64) and p == 0
    cls, p = model.forward_tokens(images, cls_only=True)
    assert cls.shape == (4, 1, 64) and p == 0 and torch.allclose(cls[:, 0], tokens[:, 0], atol=1e-5)


def test_layer_tuple_inserts_late_and_carries_on(vit, images):
    """Blocks before the first index see no prompts; the last prompts carry through the rest."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1])) for b in vit.blocks]
    try:
        model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers=(1, 2)), num_classes=2).eval()
        model(images)
    finally:
        for h in hooks:
            h.remove()
    assert seen == [65, 68, 68, 68]
    assert model.layer_prompts(0) is None and model.layer_prompts(3) is None
    assert model.layer_prompts(1).shape == (3, 64)


# ---------------------------------------------------------------- paper's parameter counts
@pytest.mark.parametrize("layers,expected", [("deep", 460_800), ("shallow", 38_400)])
def test_vit_b16_prompt_parameters_match_paper(layers, expected):
    vit = timm.create_model("vit_base_patch16_224", pretrained=False)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=50, layers=layers), num_classes=100)
    rep = model.parameter_report()
    assert rep["groups"]["prompts"] == expected
    assert rep["groups"]["head"] == 768 * 100 + 100
    assert rep["trainable"] == expected + 76_900
    assert round(rep["percent"], 2) == {"deep": 0.53, "shallow": 0.04}[layers]
    assert vx.model.prompt_init.xavier_bound(vit) == pytest.approx(0.0625, abs=2e-4)


# ---------------------------------------------------------------- gradients only where they belong
@pytest.mark.parametrize("cfg", [
    vx.PromptConfig(length=4, layers="deep"),
    vx.PromptConfig(length=4, layers="shallow", learn_cls=True),
    vx.PromptConfig(length=2, location="concat-channel", layers="shallow"),
    vx.PromptConfig(length=3, location="prepend-pixel"),
    vx.PromptConfig(length=4, fixed=True),
])
def test_optimizer_step_changes_only_prompts_and_head(vit, images, cfg):
    model = vx.PromptedViT(vit, cfg, num_classes=3, seed=0)
    before_vit = {k: v.clone() for k, v in vit.state_dict().items()}
    before_own = {k: v.clone() for k, v in model.named_parameters() if not k.startswith("vit.")}
    model.train()
    assert not vit.training, "frozen backbone must stay in eval mode"
    for _ in range(2):
        _step(model, images, torch.tensor([0, 1, 2, 0]))
    for k, v in vit.state_dict().items():
        assert torch.equal(v, before_vit[k]), f"backbone tensor {k} changed"
    assert all(p.grad is None for p in vit.parameters())
    for k, v in model.named_parameters():
        if k in before_own:
            changed = not torch.equal(v, before_own[k])
            assert changed == v.requires_grad, f"{k}: changed={changed}, trainable={v.requires_grad}"
    if cfg.fixed:
        assert not model.prompts.requires_grad


def test_concat_channel_reproduces_pretrained_output_with_zero_extra_channels(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=2, location="concat-channel", layers="shallow"),
                           num_classes=None, seed=0).eval()
    model.channel_weight.data.normal_()          # even with a trained kernel ...
    model.channel_prompts.data.zero_()           # ... zero extra channels give the pretrained output
    assert torch.allclose(model(images), vit(images), atol=1e-5)


# ---------------------------------------------------------------- every variant trains
VARIANTS = (
    [dict(location=loc) for loc in ("prepend", "prepend-pixel")]
    + [dict(location="add", length=1), dict(location="add", length=64),
       dict(location="concat-channel", layers="shallow", length=2)]
    + [dict(share=s) for s in ("intra", "inter", "all")]
    + [dict(pool=p) for p in ("image", "prompt", "global")]
    + [dict(layers=l) for l in ("shallow", (0, 1), (2, 3), (0, 2))]
    + [dict(dropout=0.1), dict(learn_cls=True, length=0)]
)


def _expected_prompt_params(cfg, D=64, depth=4, m=64):
    sets = 1 if cfg.share in ("inter", "all") else len(cfg.block_indices(depth))
    per = 1 if cfg.share in ("intra", "all") else cfg.length
    if cfg.location == "prepend-pixel":
        return sets * per * 3 * 4 * 4
    if cfg.location == "concat-channel":
        return cfg.length * 32 * 32 + D * cfg.length * 4 * 4
    return sets * per * D


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_every_variant_shapes_counts_and_learns(kw, images):
    vit = small_vit()
    cfg = vx.PromptConfig(**{"length": 4, **kw})
    torch.manual_seed(0)
    model = vx.PromptedViT(vit, cfg, num_classes=3, seed=0)
    assert model(images).shape == (4, 3)
    assert model.forward_features(images).shape == (4, 64)
    groups = model.parameter_report()["groups"]
    assert groups.get("prompts", 0) == _expected_prompt_params(cfg)
    labels = torch.tensor([0, 1, 2, 1])
    images = images.clone()
    images[torch.arange(4), labels] += 2.0  # class = colour, visible even to a random ViT
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    losses = [_step(model, images, labels, opt=opt) for _ in range(12)]
    assert losses[-1] < losses[0] * 0.8, losses
    for name, p in model.named_parameters():
        if p.requires_grad and name != "head.bias":
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"



def test_intra_sharing_repeats_one_vector(vit):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=5, share="intra"), num_classes=2)
    P = model.layer_prompts(2)
    assert P.shape == (5, 64) and torch.equal(P, P[:1].expand(5, -1))
    assert not torch.equal(model.layer_prompts(1), P)


def test_inter_sharing_uses_same_prompts_everywhere(vit):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=5, share="inter"), num_classes=2)
    assert torch.equal(model.layer_prompts(0), model.layer_prompts(3))


def test_random_init_uses_paper_bound(vit):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=50), num_classes=2, seed=0)
    v = (6 / (3 * 4 * 4 + 64)) ** 0.5
    assert model.prompts.abs().max() <= v and model.prompts.abs().max() > 0.9 * v


def test_seeded_init_is_deterministic(vit):
    a = vx.PromptedViT(vit, vx.PromptConfig(length=5), num_classes=2, seed=3)
    b = vx.PromptedViT(vit, vx.PromptConfig(length=5), num_classes=2, seed=3)
    assert torch.equal(a.prompts, b.prompts)


def test_cls_prototype_init_uses_class_means(vit):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.arange(12) % 3
    data = torch.utils.data.TensorDataset(x, y)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, init="cls", layers="deep"), num_classes=3,
                           init_data=data)
    cls = vit.forward_features(x)[:, 0]
    for c in range(3):
        assert torch.allclose(model.layer_prompts(2)[c], cls[y == c].mean(0), atol=1e-5)


def test_prompt_dropout_only_in_training(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=8, dropout=0.5), num_classes=2, seed=0)
    model.eval()
    assert torch.equal(model(images), model(images))
    model.train()
    torch.manual_seed(0)
    a = model(images)
    assert not torch.equal(a, model(images))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,words", [
    (dict(length=-1), ["length", "-1", ">= 0"]),
    (dict(length=2.5), ["length", "2.5"]),
    (dict(location="prepnd"), ["location", "prepnd", "did you mean 'prepend'"]),
    (dict(share="everything"), ["share", "everything", "'none'"]),
    (dict(pool="mean"), ["pool", "mean", "'image'"]),
    (dict(init="zeros"), ["init", "zeros", "'random'"]),
    (dict(layers="medium"), ["layers", "medium", "'deep'"]),
    (dict(layers=(0, -1)), ["layers", "-1"]),
    (dict(layers=()), ["layers", "empty"]),
    (dict(layers=(1, 1)), ["layers", "repeats"]),
    (dict(dropout=1.0), ["dropout", "1.0", "[0.0, 1.0)"]),
    (dict(dropout=-0.1), ["dropout", "-0.1"]),
    (dict(length=0, pool="prompt"), ["pool='prompt'", "length=0"]),
    (dict(location="concat-channel", layers="deep"), ["concat-channel", "shallow"]),
    (dict(init="cls", location="add"), ["init='cls'", "prepend"]),
    (dict(fixed="yes"), ["fixed", "yes"]),
])
def test_bad_prompt_config_names_field_value_and_allowed(kw, words):
    with pytest.raises(ValueError) as e:
        vx.PromptConfig(**kw)
    assert isinstance(e.value, vx.ConfigError)
    assert_words(e.value, words)


def test_bad_config_against_backbone(vit):
    with pytest.raises(vx.ConfigError, match=r"block 7.*4 blocks"):
        vx.PromptedViT(vit, vx.PromptConfig(layers=(1, 7)), num_classes=2)
    with pytest.raises(vx.ConfigError, match=r"length=5.*location='add'.*1.*64"):
        vx.PromptedViT(vit, vx.PromptConfig(length=5, location="add"), num_classes=2)
    with pytest.raises(vx.ConfigError, match=r"init_data"):
        vx.PromptedViT(vit, vx.PromptConfig(length=2, init="cls"), num_classes=2)
    with pytest.raises(vx.ConfigError, match=r"num_classes"):
        vx.PromptedViT(vit, vx.PromptConfig(length=2), num_classes=0)
    no_cls = small_vit(class_token=False, global_pool="avg")
    with pytest.raises(vx.ConfigError, match=r"pool='cls'.*pool='image'"):
        vx.PromptedViT(no_cls, vx.PromptConfig(), num_classes=2)
    with pytest.raises(vx.ConfigError, match="not a timm VisionTransformer"):
        vx.PromptedViT(torch.nn.Linear(3, 3), vx.PromptConfig(), num_classes=2)


def test_pixel_and_channel_prompts_need_conv_patch_embedding():
    vit = small_vit()
    vit.patch_embed.proj = torch.nn.Identity()
    for loc in ("prepend-pixel", "concat-channel"):
        with pytest.raises(vx.ConfigError, match=r"convolutional patch embedding"):
            vx.PromptedViT(vit, vx.PromptConfig(length=2, location=loc, layers="shallow"), num_classes=2)


@pytest.mark.parametrize("shape,words", [((2, 1, 32, 32), ["1 channels", "expects 3"]),
                                         ((2, 3, 48, 48), ["48x48", "32x32"]),
                                         ((3, 32, 32), ["(B, C, H, W)"])])
def test_bad_batch_fails_before_compute(vit, shape, words):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=2), num_classes=2)
    calls = []
    h = vit.patch_embed.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(vx.DataError) as e:
            model(torch.zeros(shape))
    finally:
        h.remove()
    assert not calls
    assert_words(e.value, words)


def test_parameter_report_fields(vit):
    rep = vx.PromptedViT(vit, vx.PromptConfig(length=2, layers="shallow"), num_classes=4).parameter_report()
    assert set(rep) == {"trainable", "total", "backbone", "percent", "groups"}
    assert rep["total"] == rep["backbone"] + rep["trainable"]
    assert rep["groups"] == {"prompts": 128, "head": 64 * 4 + 4}
