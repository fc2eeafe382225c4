"""vit_math: eqs. (1)-(8) written out must match timm and PromptedViT (allclose 1e-5)."""
import pytest
import timm
import torch

import vpt_explore as vx
from vpt_explore.model import vit_math as vm

TOL = dict(atol=1e-5, rtol=1e-5)


def _vit(**kw):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                            embed_dim=64, depth=3, num_heads=2, num_classes=5, **kw).eval()
    with torch.no_grad():  # random, non-trivial biases and norms so every term matters
        for name, p in vit.named_parameters():
            if name.endswith(("bias", "norm1.weight", "norm2.weight", "norm.weight")):
                p.add_(0.1 * torch.randn_like(p))
    return vit


@pytest.fixture(scope="module")
def vit():
    return _vit()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_patchify_matches_patch_projection(vit, images):
    patches = vm.patchify(images, 4)                                   # (B, m, C*p*p)
    assert patches.shape == (3, 64, 48)
    W = vit.patch_embed.proj.weight.reshape(64, -1)
    ref = vit.patch_embed(images)                                      # (B, m, D)
    torch.testing.assert_close(patches @ W.T + vit.patch_embed.proj.bias, ref, **TOL)


def test_patchify_rejects_bad_sizes():
    with pytest.raises(vx.ConfigError, match="30x32"):
        vm.patchify(torch.zeros(1, 3, 30, 32), 4)


@torch.no_grad()
def test_embed_eq1(vit, images):
    ref = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    torch.testing.assert_close(vm.embed(vit, images), ref, **TOL)


@torch.no_grad()
def test_attention_mlp_and_block_eq2(vit, images):
    x = vm.embed(vit, images)
    for blk in vit.blocks:
        h = blk.norm1(x)
        out, A = vm.attention(blk, h, return_weights=True)
        torch.testing.assert_close(out, blk.attn(h), **TOL)
        assert A.shape == (3, 2, 65, 65)
        torch.testing.assert_close(A.sum(-1), torch.ones(3, 2, 65), **TOL)
        torch.testing.assert_close(vm.mlp(blk, blk.norm2(x)), blk.mlp(blk.norm2(x)), **TOL)
        torch.testing.assert_close(vm.layer_norm(blk.norm1, x), h, **TOL)
        torch.testing.assert_close(vm.block(blk, x), blk(x), **TOL)
        x = blk(x)


@torch.no_grad()
def test_block_with_layer_scale():
    vit = _vit(init_values=0.5)
    with torch.no_grad():
        for blk in vit.blocks:
            blk.ls1.gamma.uniform_(0.1, 1.0)
    x = vm.embed(vit, torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(vm.block(vit.blocks[0], x), vit.blocks[0](x), **TOL)


@torch.no_grad()
def test_vit_forward_and_head_eq3(vit, images):
    tokens = vm.vit_forward(vit, images)
    torch.testing.assert_close(tokens, vit.forward_features(images), **TOL)
    torch.testing.assert_close(vm.head(vit, tokens), vit(images), **TOL)


@torch.no_grad()
def test_register_tokens_and_avg_pool(images):
    vit = _vit(reg_tokens=2, global_pool="avg", fc_norm=True)
    assert vit.num_prefix_tokens == 3
    torch.testing.assert_close(vm.vit_forward(vit, images), vit.forward_features(images), **TOL)
    torch.testing.assert_close(vm.head(vit, vm.vit_forward(vit, images)), vit(images), **TOL)


@torch.no_grad()
def test_shallow_forward_matches_prompted_vit(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=4, layers="shallow"), num_classes=5, seed=0).eval()
    P = model.layer_prompts(0)                                         # (p, D)
    tokens = vm.shallow_forward(vit, P, images)                        # (B, 1+p+m, D)
    ref, n_p = model.forward_tokens(images)
    assert n_p == 4 and tokens.shape == (3, 1 + 4 + 64, 64)
    torch.testing.assert_close(tokens, ref, **TOL)
    torch.testing.assert_close(model.head(tokens[:, 0]), model(images), **TOL)


@torch.no_grad()
def test_deep_forward_matches_prompted_vit(vit, images):
    model = vx.PromptedViT(vit, vx.PromptConfig(length=3, layers="deep"), num_classes=5, seed=0).eval()
    Ps = torch.stack([model.layer_prompts(i) for i in range(3)])      # (N, p, D)
    tokens = vm.deep_forward(vit, Ps, images)
    ref, _ = model.forward_tokens(images)
    torch.testing.assert_close(tokens, ref, **TOL)
    torch.testing.assert_close(model.head(tokens[:, 0]), model(images), **TOL)
    with pytest.raises(vx.ConfigError, match="one prompt set per block"):
        vm.deep_forward(vit, Ps[:2], images)


@torch.no_grad()
def test_zero_length_prompts_give_plain_vit(vit, images):
    empty = torch.zeros(0, 64)
    torch.testing.assert_close(vm.shallow_forward(vit, empty, images), vit.forward_features(images), **TOL)


def test_prompt_storage_matches_paper_for_vit_b():
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, patch_size=16)
    assert vm.prompt_storage(vit, 50, deep=False) == 38_400
    assert vm.prompt_storage(vit, 50, deep=True) == 460_800
