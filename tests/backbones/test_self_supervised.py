"""Self-supervised ViTs (MAE, MoCo v3) from local files, their pooling, and VPT on them."""
import pytest
import timm
import torch

import vpt_explore as vx
from vpt_explore.backbones.self_supervised import mocov3_keys

SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **SMALL).eval()


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def mae(encoder, tmp_path):
    """An MAE-style pretraining checkpoint: {"model": encoder keys + decoder + mask_token}."""
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": {**encoder.state_dict(), "mask_token": torch.zeros(1, 1, 32),
                          "decoder_embed.weight": torch.zeros(16, 32)}}, path)
    return vx.load_backbone("vit_base_patch16_224.mae", weights=str(path), **SMALL)


def test_mae_loads_offline_with_average_pooling_after_its_own_norm(mae, encoder, images):
    assert mae.global_pool == "avg" and isinstance(mae.fc_norm, torch.nn.Identity)
    assert torch.equal(mae.norm.weight, encoder.norm.weight)           # the checkpoint's final norm is kept
    tokens = encoder.forward_features(images)                           # (B, 1+m, D) after norm
    assert torch.allclose(mae(images), tokens[:, 1:].mean(1), atol=1e-6)  # [CLS] left out of the mean
    assert mae.vpt_name == "vit_base_patch16_224.mae"


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep"])
def test_vpt_on_mae_pools_image_tokens_only(mae, images, method):
    zero = vx.make_model(method, mae, 3, length=0).eval()
    assert zero.cfg.pool == "image"
    assert torch.equal(zero.forward_features(images), mae.forward_head(mae.forward_features(images), pre_logits=True))
    model = vx.make_model(method, mae, 3, length=4, seed=0).eval()
    with torch.no_grad():
        tokens, n_p = model.forward_tokens(images)                       # (B, 1+p+m, D)
        assert n_p == 4
        assert torch.allclose(model.forward_features(images), tokens[:, 1 + 4:].mean(1), atol=1e-6)
        assert not torch.allclose(model.forward_features(images), tokens[:, 1:].mean(1), atol=1e-4)


def test_mocov3_checkpoint_keys_are_mapped(encoder, tmp_path, images):
    sd = encoder.state_dict()
    ckpt = {"epoch": 300, "state_dict": {**{f"module.base_encoder.{k}": v for k, v in sd.items()},
                                         **{f"module.momentum_encoder.{k}": v + 1 for k, v in sd.items()},
                                         "module.base_encoder.head.0.weight": torch.zeros(64, 32),
                                         "module.predictor.0.weight": torch.zeros(8, 8)}}
    path = tmp_path / "vit-b-300ep.pth.tar"
    torch.save(ckpt, path)
    moco = vx.load_backbone("mocov3-vit-b16", weights=str(path), **SMALL)
    assert moco.global_pool == "token"
    assert torch.equal(moco(images), encoder(images))
    assert moco.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    assert vx.make_model("vpt-deep", moco, 3).cfg.pool == "cls"
    assert set(mocov3_keys({"module.x": torch.zeros(1)}, ())) == {"x"}


def test_mocov3_needs_weights_and_a_fitting_file(tmp_path):
    with pytest.raises(vx.MissingFileError, match="weights="):
        vx.load_backbone("mocov3-vit-b16")
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.base_encoder.cls_token": torch.zeros(1, 1, 32)}}, path)
    with pytest.raises(vx.PromptFileError, match="missing"):
        vx.load_backbone("mocov3-vit-b16", weights=str(path), **SMALL)


def test_mae_without_a_file_goes_to_the_hub_and_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(vx.MissingFileError, match="HF_HUB_OFFLINE"):
        vx.load_backbone("vit_base_patch16_224.mae", **SMALL)
