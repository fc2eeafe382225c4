"""make_model, train and sweep beyond the plain ViT: Swin, ConvNets, pixel prompters."""
import pytest
import timm
import torch

import vpt_explore as vx
from tests.conftest import assert_words, small_vit, toy_data
from vpt_explore.methods.registry import methods_for, parse_method
from vpt_explore.model.input_prompted import InputPromptedModel
from vpt_explore.model.swin_prompts import PromptedSwin

NEW = ("pad-prompt", "fixed-patch", "random-patch", "conv-pad")


def _swin():
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, patch_size=2,
                             embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, num_classes=5).eval()


def _resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=5, zero_init_last=False).eval()


def test_new_methods_are_listed_and_use_sgd():
    for name in NEW:
        assert name in vx.METHODS
        spec, k = parse_method(name)
        assert spec.has_prompts and spec.input_prompt and spec.optimizer == "sgd" and k is None
    assert methods_for("convnet") == ("linear", "pad-prompt", "fixed-patch", "random-patch", "conv-pad")
    assert methods_for("swin") == ("linear", "vpt-shallow", "vpt-deep", "pad-prompt", "fixed-patch", "random-patch")


@pytest.mark.parametrize("method,cls", [("vpt-shallow", PromptedSwin), ("vpt-deep", PromptedSwin),
                                        ("linear", PromptedSwin), ("pad-prompt", InputPromptedModel)])
def test_make_model_builds_swin_models(method, cls):
    model = vx.make_model(method, _swin(), 3, length=2)
    assert type(model) is cls and model.method == method
    if method.startswith("vpt"):
        assert model.cfg.pool == "image" and model.cfg.layers == method.split("-")[1]
        assert model.cfg.dropout == (0.1 if method == "vpt-deep" else 0.0)


@pytest.mark.parametrize("method", ["vpt-deep", "vpt-shallow", "ensemble", "vpt+bias"])
def test_token_prompts_on_a_convnet_say_what_to_use(method):
    with pytest.raises(vx.ConfigError) as err:
        vx.make_model(method, _resnet(), 3, location="prepend")
    assert_words(err.value, [f"method={method!r}", "ConvNets have no tokens", "'conv-pad'", "'pad-prompt'"])


@pytest.mark.parametrize("method", ["full", "adapter", "partial-1", "bias", "conv-pad"])
def test_methods_a_swin_cannot_run_are_refused(method):
    with pytest.raises(vx.ConfigError) as err:
        vx.make_model(method, _swin(), 3)
    assert_words(err.value, [f"method={method!r}", "SwinTransformer", "'vpt-deep'", "'pad-prompt'"])


def test_conv_pad_is_refused_on_a_vit():
    with pytest.raises(vx.ConfigError) as err:
        vx.make_model("conv-pad", small_vit(depth=2), 3)
    assert_words(err.value, ["method='conv-pad'", "ConvNet", "VisionTransformer", "'fixed-patch'"])


@pytest.mark.parametrize("field,value", [("layers", "deep"), ("location", "add"), ("share", "inter"),
                                         ("pool", "image"), ("dropout", 0.1)])
def test_pixel_prompts_take_only_a_length(field, value):
    with pytest.raises(vx.ConfigError) as err:
        vx.make_model("fixed-patch", small_vit(depth=2), 3, length=4, **{field: value})
    assert_words(err.value, [f"{field}={value!r}", "method='fixed-patch'", "pixels", "only length"])
    model = vx.make_model("fixed-patch", small_vit(depth=2), 3, prompt=vx.PromptConfig(length=4, layers=(0,)))
    assert model.cfg.length == 4 and model.cfg.layers == "shallow"


def test_a_model_that_is_not_timm_is_refused():
    with pytest.raises(vx.ConfigError, match="not a timm model"):
        vx.make_model("linear", torch.nn.Linear(3, 3), 3)


@pytest.mark.parametrize("method,backbone", [("vpt-deep", _swin), ("vpt-shallow", _swin), ("pad-prompt", _swin),
                                             ("conv-pad", _resnet), ("random-patch", _resnet),
                                             ("fixed-patch", lambda: small_vit(depth=2)), ("linear", _resnet)])
def test_train_accepts_them(method, backbone):
    data = toy_data(24, classes=3)
    model = vx.make_model(method, backbone(), 3, length=4, image_size=32, seed=1)
    hist = vx.train(model, data, data, vx.TrainConfig(epochs=2, batch_size=8, progress=False))
    assert hist.status == "completed" and hist.best_val_acc is not None
    assert hist.cached_features == (method == "linear")
    assert hist.trainable == model.parameter_report()["trainable"]


def test_sweep_accepts_them():
    data = toy_data(24, classes=3)
    splits = {"train": data, "val": data, "trainval": data, "test": data, "name": "toy"}
    splits["test"].num_classes = 3
    res = vx.sweep(["pad-prompt", "vpt-deep"], _swin(), splits, lengths=(2, 4), epochs=1, batch_size=8,
                   progress=False)
    tested = [r for r in res.rows if r["stage"] == "test"]
    assert [r["method"] for r in tested] == ["pad-prompt", "vpt-deep"]
    assert all(r["length"] in (2, 4) and 0 <= r["test_acc"] <= 1 for r in tested)
