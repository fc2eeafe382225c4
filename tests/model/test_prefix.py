"""VPT-prefix (cached per-block K/V and the training prefix path) equals the token path."""
import pytest
import torch

import vpt_explore as vx
from vpt_explore.errors import ConfigError
from vpt_explore.model.prefix import PrefixViT

from tests.conftest import small_vit

TOL = 1e-5


def _prompted(vit, seed=0, num_classes=3, **cfg):
    model = vx.PromptedViT(vit, vx.PromptConfig(**cfg), num_classes=num_classes, seed=seed).eval()
    if getattr(model, "cls_delta", None) is not None:
        with torch.no_grad():
            model.cls_delta.normal_(generator=torch.Generator().manual_seed(seed))
    return model


def _twin(model, path):
    """The same prompts, head and backbone as ``model``, built with another ``path``."""
    twin = vx.PromptedViT(model.vit, model.cfg, model.num_classes, path=path)
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("p", [1, 5, 16])
@pytest.mark.parametrize("layers", ["deep", (2, 3)])
@pytest.mark.parametrize("pool", ["cls", "image"])
@pytest.mark.parametrize("share", ["none", "inter"])
def test_prefix_equals_token_path(vit, images, p, layers, pool, share):
    model = _prompted(vit, length=p, layers=layers, pool=pool, share=share)
    fast = model.as_prefix()
    with torch.no_grad():
        assert _max_diff(fast(images), model(images)) < TOL
        assert _max_diff(fast.forward_features(images), model.forward_features(images)) < TOL
    assert fast.head is model.head


@pytest.mark.parametrize("kw", [
    dict(reg_tokens=2),
    dict(no_embed_class=True),
    dict(reg_tokens=2, no_embed_class=True),
    dict(qk_norm=True, init_values=0.1),
    dict(class_token=False, global_pool="avg"),
])
def test_prefix_backbone_variants(images, kw):
    vit = small_vit(**kw)
    pool = "image" if kw.get("class_token") is False else "cls"
    model = _prompted(vit, length=5, pool=pool)
    with torch.no_grad():
        for name, p in model.vit.named_parameters():  # non-trivial k_norm / layer-scale weights
            if "norm" in name or "ls" in name:
                p.add_(0.1 * torch.randn_like(p))
        assert _max_diff(model.as_prefix()(images), model(images)) < TOL


@pytest.mark.parametrize("cfg", [
    dict(share="intra"), dict(share="all"), dict(learn_cls=True), dict(location="prepend-pixel"),
    dict(layers=(3,)),
])
def test_prefix_other_exact_setups(vit, images, cfg):
    model = _prompted(vit, length=4, **cfg)
    with torch.no_grad():
        assert _max_diff(model.as_prefix()(images), model(images)) < TOL


def test_prefix_prompt_slot_after_and_zero_length(vit, images):
    model = _prompted(vit, length=6)
    model.prompt_slot = "after"
    with torch.no_grad():
        assert _max_diff(model.as_prefix()(images), model(images)) < TOL
        empty = _prompted(vit, length=0)
        assert _max_diff(empty.as_prefix()(images), empty(images)) < TOL


@pytest.mark.parametrize("cfg, field", [
    (dict(layers="shallow"), "layers"),
    (dict(layers=(1, 3)), "layers"),
    (dict(layers=(0, 1)), "layers"),
    (dict(location="add", length=1), "location"),
    (dict(location="concat-channel", layers="shallow"), "location"),
    (dict(pool="prompt"), "pool"),
    (dict(pool="global"), "pool"),
])
def test_prefix_refuses_inexact_setups(vit, cfg, field):
    model = _prompted(vit, **{"length": 4, **cfg})
    with pytest.raises(ConfigError, match=field):
        model.as_prefix()


def test_prefix_refuses_training_mode(vit, images):
    model = _prompted(vit, length=4)
    with pytest.raises(ConfigError, match="eval"):
        model.train().as_prefix()
    fast = model.eval().as_prefix()
    model.train()
    with pytest.raises(ConfigError, match="eval"):
        fast(images)


def test_prefix_refresh_tracks_prompt_changes(vit, images):
    model = _prompted(vit, length=5)
    fast = model.as_prefix()
    with torch.no_grad():
        before = fast(images)
        model.prompts.add_(torch.randn_like(model.prompts))  # (a constant shift would vanish in LN)
        assert fast.is_stale()                          # the cache notices (it used to return `before`)
        after = fast(images)
        assert _max_diff(before, after) > 1e-3 and not fast.is_stale()
        assert _max_diff(after, model(images)) < TOL
        fast.refresh()                                  # still there, still exact
        assert _max_diff(fast(images), model(images)) < TOL


def test_prefix_kv_buffer_shape_and_state_dict(vit):
    model = _prompted(vit, length=7)
    fast = model.as_prefix()
    assert isinstance(fast, PrefixViT)
    assert tuple(fast.kv.shape) == (4, 2, 2, 7, 32)   # (L, 2, H, p, hd)
    assert "kv" not in fast.state_dict()               # derived, never saved


# ----------------------------------------------------------------- training through the prefix path
def _grads(model, images):
    """Logits and the gradient of every trainable tensor of one (squared-logit) backward pass."""
    params = [q for q in model.parameters() if q.requires_grad]
    logits = model(images)
    return logits.detach(), torch.autograd.grad(logits.square().sum(), params)


@pytest.mark.parametrize("kw", [dict(length=5), dict(length=3, layers=(2, 3), pool="image"),
                                dict(length=4, location="prepend-pixel"), dict(length=4, share="intra"),
                                dict(length=3, learn_cls=True)])
def test_training_prefix_path_matches_token_path(vit, images, kw):
    """Same logits and the same gradients for prompts, head (and [CLS]) as the token path."""
    model = _prompted(vit, **kw).train()
    assert model.uses_prefix_path()
    fast_logits, fast_grads = _grads(model, images)
    model = _twin(model, "token")
    assert not model.uses_prefix_path()
    logits, grads = _grads(model, images)
    assert _max_diff(fast_logits, logits) < TOL
    assert len(grads) == len(fast_grads) >= 2
    for g_fast, g in zip(fast_grads, grads):
        assert g.abs().max() > 0
        assert torch.allclose(g_fast, g, rtol=1e-4, atol=1e-6)


def test_training_prefix_path_with_register_tokens(images):
    """[CLS] stays token 0 with registers, so the last block's [CLS]-only query is still exact."""
    model = _prompted(small_vit(reg_tokens=2), length=4).train()
    assert model.uses_prefix_path()
    fast_logits, fast_grads = _grads(model, images)
    model = _twin(model, "token")
    logits, grads = _grads(model, images)
    assert _max_diff(fast_logits, logits) < TOL
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(fast_grads, grads))


def test_prefix_block_with_fewer_queries_is_the_first_rows(vit):
    """Asking with the first n tokens only gives exactly those rows of the all-token output."""
    from vpt_explore.model.prefix import prefix_block, prompt_kv
    blk, x = vit.blocks[1], torch.randn(2, 65, 64)
    k, v = prompt_kv(blk, torch.randn(1, 3, 64))                      # (1, H, 3, hd)
    with torch.no_grad():
        full, first = prefix_block(blk, x, (k, v)), prefix_block(blk, x, (k, v), queries=1)
    assert first.shape == (2, 1, 64) and _max_diff(first, full[:, :1]) < TOL


@pytest.mark.parametrize("kw", [dict(length=5, layers="shallow"), dict(length=5, layers=(0, 2)),
                                dict(length=1, location="add"), dict(length=5, pool="prompt"),
                                dict(length=2, location="concat-channel", layers="shallow"),
                                dict(length=5, pool="global"), dict(length=0)])
def test_training_uses_token_path_where_prefix_is_not_exact(vit, images, kw):
    model = _prompted(vit, **kw).train()
    assert not model.uses_prefix_path()
    seen = []
    hook = vit.blocks[-1].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    try:
        model(images)
    finally:
        hook.remove()
    n_tokens = 65 + (kw["length"] if kw.get("location", "prepend") == "prepend" else 0)
    assert seen == [n_tokens]


def test_eval_mode_and_hooked_blocks_keep_the_token_path(vit, images):
    """The prefix path is a training detail: eval forwards, and blocks someone hooks (probes,
    attributions), still see the prompt tokens in the sequence."""
    model = _prompted(vit, length=5).eval()
    assert not model.uses_prefix_path()
    seen = []
    hook = vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    try:
        model(images)
        model.train()(images)
        assert not model.uses_prefix_path()
    finally:
        hook.remove()
    assert seen == [1 + 5 + 64, 1 + 5 + 64]
    assert model.uses_prefix_path()
    hook = vit.blocks[2].attn.attn_drop.register_forward_hook(lambda *a: None)  # as record_attention
    try:
        assert not model.uses_prefix_path()
    finally:
        hook.remove()


def test_training_prefix_path_draws_prompt_dropout_per_image(vit):
    model = _prompted(vit, length=8, dropout=0.5).train()
    assert model.uses_prefix_path()
    same = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)
    torch.manual_seed(0)
    out = model(same)
    assert not torch.allclose(out[0], out[1])                       # different masks per image
    assert torch.allclose(model.eval()(same)[0], model(same)[1])     # no dropout in eval


def test_training_prefix_path_off_with_attention_dropout_in_a_training_backbone():
    vit = small_vit(attn_drop_rate=0.1)
    model = vx.make_model("vpt+bias", vit, 3, length=4).train()
    assert model.vit.training and not model.uses_prefix_path()
    frozen = vx.PromptedViT(vit, vx.PromptConfig(length=4), 3).train()
    assert not frozen.vit.training and frozen.uses_prefix_path()    # eval backbone: no dropout


# ---------------------------------------------------------------- cache staleness and memory
def test_as_prefix_notices_changed_prompts_and_weights():
    """A cached PrefixViT never returns stale logits: it refreshes when prompts or weights change."""
    vit = small_vit(depth=3)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers="deep"), 4).eval()
    fast = model.as_prefix()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(fast(x), model(x), atol=1e-5)
    model.prompts.data.add_(0.5)                      # an edit that bypasses autograd's version counter
    assert fast.is_stale()
    assert torch.allclose(fast(x), model(x), atol=1e-5) and not fast.is_stale()
    opt = torch.optim.SGD([model.prompts], lr=1.0)   # a training step between two evaluations
    model.train()
    model(x).sum().backward()
    opt.step()
    model.eval()
    assert torch.allclose(fast(x), model(x), atol=1e-5)
    with torch.no_grad():                             # the backbone weights the K/V rows read
        vit.blocks[1].attn.qkv.weight.mul_(1.1)
    assert torch.allclose(fast(x), model(x), atol=1e-5)


def test_prefix_training_path_keeps_no_more_for_backward_than_the_token_path():
    """At p=10 the prefix path used to concatenate K/V in every block; now its saved tensors for the
    backward pass take no more memory than the token path's."""
    vit = small_vit(depth=4)
    model = vx.make_model("vpt-deep", vit, 3, length=10).train()
    model.prompt_dropout.p = 0.0
    x = torch.randn(8, 3, 32, 32)

    def saved_bytes(path):
        twin = _twin(model, path)
        seen = {}

        def pack(t):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            assert twin.uses_prefix_path() == (path == "auto")
            out = twin(x)
        out.sum().backward()
        return sum(seen.values())
    assert saved_bytes("auto") <= saved_bytes("token")


# ---------------------------------------------------------------- the path, fixed at construction
def test_path_prefix_is_exact_in_eval_and_training(vit, images):
    """path="prefix" runs the prefix step in eval mode too: the token path's logits."""
    model = _prompted(vit, length=5)
    fast = _twin(model, "prefix").eval()
    assert fast.block_path() == "prefix" and model.block_path() == "token"
    with torch.no_grad():
        assert _max_diff(fast(images), model(images)) < TOL
    assert fast.train().block_path() == "prefix" and _twin(model, "token").train().block_path() == "token"


@pytest.mark.parametrize("kw, words", [(dict(length=5, layers="shallow"), ["layers='shallow'"]),
                                       (dict(length=5, pool="prompt"), ["pool='prompt'"]),
                                       (dict(length=1, location="add"), ["location='add'"])])
def test_path_prefix_refuses_a_setup_where_it_is_not_exact(vit, kw, words):
    with pytest.raises(ConfigError) as err:
        vx.PromptedViT(vit, vx.PromptConfig(**kw), 3, path="prefix")
    assert all(w in str(err.value) for w in words)


def test_path_is_a_checked_choice(vit):
    with pytest.raises(ConfigError, match="path='prefx'.*'auto', 'token', 'prefix'"):
        vx.PromptedViT(vit, vx.PromptConfig(length=2), 3, path="prefx")
    assert vx.PromptedViT(vit, vx.PromptConfig(length=2), 3).path == "auto"


def test_one_block_loop_in_the_model_package():
    """Every ViT path (token, prefix, cached K/V, multi-task, frozen prefix) runs forward_blocks."""
    import pathlib
    import vpt_explore.model as pkg
    root = pathlib.Path(pkg.__file__).parent
    loops = [f"{f.name}:{n}" for f in sorted(root.glob("*.py")) if f.name != "vit_math.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if "for i, blk in enumerate" in line]
    assert len(loops) == 1 and loops[0].startswith("prompted.py"), loops
