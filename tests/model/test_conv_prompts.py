"""VPT on ConvNets: learned pixels around the image (paper Sec. 4.2)."""
import pytest
import timm
import torch

import vpt_explore as vx
from tests.conftest import toy_data
from tests.model.steps import sgd_losses
from vpt_explore.model.conv_prompts import ConvPadPrompter, conv_pad_params, first_conv, first_conv_crop


def _resnet():
    torch.manual_seed(0)  # zero_init_last=False: see tests/model/test_pixel_prompts.py
    return timm.create_model("resnet18", pretrained=False, num_classes=5, zero_init_last=False).eval()


def _convnext():
    torch.manual_seed(0)
    return timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64),
                             num_classes=5).eval()


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_the_frame_grows_the_image_and_keeps_it_inside(images):
    pad = ConvPadPrompter(3, (32, 32), generator=torch.Generator().manual_seed(0))
    out = pad(images)
    assert out.shape == (2, 3, 38, 38)
    assert torch.equal(out[..., 3:-3, 3:-3], images)
    assert torch.equal(out[0, :, :3], out[1, :, :3])                      # one frame for every image
    assert sum(p.numel() for p in pad.parameters()) == conv_pad_params(3, (32, 32)) == 3 * (38 * 38 - 32 * 32)


@pytest.mark.parametrize("build", [_resnet, _convnext])
def test_zero_length_reproduces_the_backbone_exactly(build, images):
    net = build()
    model = vx.make_model("conv-pad", net, 3, length=0, image_size=32).eval()
    assert torch.equal(model.forward_features(images), net.forward_head(net.forward_features(images), pre_logits=True))


@pytest.mark.parametrize("build,length", [(_resnet, 2), (_resnet, 6), (_convnext, 4), (_convnext, 8)])
def test_a_zero_frame_is_the_first_convolutions_own_padding(build, length, images):
    """Exact statement: conv(zero frame of width p around x), cropped by p/stride, equals conv(x)."""
    net = build()
    plain, cropped = first_conv_crop(net, images, length)
    assert plain.shape == cropped.shape
    assert torch.allclose(plain, cropped, atol=1e-6)
    # ... and it is only the first convolution: the whole network sees extra border positions
    zero = vx.make_model("conv-pad", net, 3, length=length, image_size=32).eval()
    with torch.no_grad():
        for p in zero.prompter.parameters():
            p.zero_()
        assert not torch.allclose(zero.forward_features(images),
                                  net.forward_head(net.forward_features(images), pre_logits=True), atol=1e-3)


def test_a_frame_that_is_not_a_multiple_of_the_stride_is_refused(images):
    with pytest.raises(vx.ConfigError, match=r"length=3 must be a multiple of the first convolution's stride"):
        first_conv_crop(_resnet(), images, 3)


def test_init_uses_the_stem_xavier_bound():
    net = _resnet()
    model = vx.make_model("conv-pad", net, 3, length=4, image_size=32)
    bound = ConvPadPrompter.stem_bound(first_conv(net))
    assert bound == pytest.approx((6 / (3 * 7 * 7 + 64)) ** 0.5)
    values = torch.cat([p.flatten() for p in model.prompter.parameters()])
    assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound


@pytest.mark.parametrize("build", [_resnet, _convnext])
def test_only_the_frame_and_head_train_and_batch_norm_stays_frozen(build):
    net = build()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = toy_data(12, classes=3).tensors
    model = vx.make_model("conv-pad", net, 3, length=4, image_size=32).train()

    def only_frame_and_head(m):
        assert all(p.grad is None for p in net.parameters())
        assert all(p.grad.abs().sum() > 0 for p in m.prompter.parameters())
    losses = sgd_losses(model, x, y, after_first_backward=only_frame_and_head)
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(v, stats[k]) for k, v in net.state_dict().items()), "running stats must not move"
