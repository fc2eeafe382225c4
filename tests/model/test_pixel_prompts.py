"""Pixel-space prompters after Bahng et al. 2022 on any frozen backbone."""
import pytest
import timm
import torch

import vpt_explore as vx
from tests.conftest import small_vit, toy_data
from tests.model.steps import sgd_losses
from vpt_explore.model.input_prompted import InputPromptedModel
from vpt_explore.model.pixel_prompts import (FixedPatchPrompter, PadPrompter, RandomPatchPrompter,
                                             pad_prompter_params)

PIXEL = ("pad-prompt", "fixed-patch", "random-patch")


def _backbones():
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, patch_size=2,
                             embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, num_classes=5)
    # zero_init_last=False: timm zeroes each residual branch's last BN at init, which leaves a random
    # ResNet reading only the top-left corner of the image (its stride-2 shortcuts); pretrained ones do not
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=5, zero_init_last=False)
    return {"vit": small_vit(depth=2), "swin": swin.eval(), "resnet": resnet.eval()}


BACKBONES = _backbones()


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _plain(backbone, x):
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("method", PIXEL)
def test_zero_length_and_zero_prompts_leave_the_backbone_exact(name, method, images):
    backbone = BACKBONES[name]
    for length in (0, 4):
        model = vx.make_model(method, backbone, 3, length=length, image_size=32).eval()
        with torch.no_grad():
            for p in model.prompter.parameters():
                p.zero_()
            assert torch.equal(model.forward_features(images), _plain(backbone, images))
    ident = InputPromptedModel(backbone, None, None).eval()
    assert torch.equal(ident(images), backbone(images))


def test_pad_prompter_adds_a_frame_and_leaves_the_inside(images):
    pad = PadPrompter(4, (32, 32), generator=torch.Generator().manual_seed(0))
    out = pad(images)
    assert torch.equal(out[..., 4:-4, 4:-4], images[..., 4:-4, 4:-4])
    border = torch.ones(32, 32, dtype=torch.bool)
    border[4:-4, 4:-4] = False
    assert ((out - images)[..., border] != 0).all()
    assert sum(p.numel() for p in pad.parameters()) == pad_prompter_params(4, (32, 32)) == 2 * 3 * 4 * 32 + 2 * 3 * 24 * 4
    assert pad_prompter_params(30, (224, 224)) == 69_840


def test_fixed_patch_sits_at_the_top_left(images):
    patch = FixedPatchPrompter(5, (32, 32), generator=torch.Generator().manual_seed(0))
    delta = patch(images) - images
    assert torch.allclose(delta[:, :, :5, :5], patch.patch.detach().expand(3, -1, -1, -1), atol=1e-6)
    delta[:, :, :5, :5] = 0
    assert not delta.any()


def test_random_patch_is_seeded_per_image_in_training_and_fixed_in_eval(images):
    def build():
        return RandomPatchPrompter(5, (32, 32), generator=torch.Generator().manual_seed(0), seed=7)

    a, b = build().train(), build().train()
    rng = torch.random.get_rng_state()
    places = a.place(64, "cpu")
    assert torch.equal(torch.random.get_rng_state(), rng), "the global RNG must not move"
    assert torch.equal(places, b.place(64, "cpu")), "same seed, same places"
    assert len({tuple(p) for p in places.tolist()}) > 10 and places.max() <= 32 - 5
    delta = a(images) - images
    for k in range(3):                                        # one patch per image, where it was drawn
        assert (delta[k] != 0).sum() == 3 * 25
    a.eval()
    assert torch.equal(a.place(4, "cpu"), torch.zeros(4, 2, dtype=torch.long))
    assert torch.equal(a(images), a(images))


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("method", PIXEL)
def test_only_prompter_and_head_train_and_the_loss_falls(name, method):
    backbone = BACKBONES[name]
    x, y = toy_data(12, classes=3).tensors
    model = vx.make_model(method, backbone, 3, length=6, image_size=32).train()
    assert not backbone.training

    def only_prompter_and_head(m):
        assert all(p.grad is None for p in backbone.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.prompter.parameters())
    losses = sgd_losses(model, x, y, after_first_backward=only_prompter_and_head)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("cls,limit", [(PadPrompter, 16), (FixedPatchPrompter, 32)])
def test_a_prompt_larger_than_the_image_is_refused(cls, limit):
    cls(limit, (32, 32))
    with pytest.raises(vx.ConfigError, match=rf"length={limit + 1} .*allowed 0\.\.{limit}"):
        cls(limit + 1, (32, 32))


def test_images_of_another_size_are_refused():
    model = vx.make_model("pad-prompt", BACKBONES["resnet"], 3, length=2, image_size=32)
    with pytest.raises(vx.ConfigError, match="image_size="):
        model(torch.randn(1, 3, 40, 40))
