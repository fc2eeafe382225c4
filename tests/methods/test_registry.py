"""Methods as data: parse_method, the specs the library reads, and a toy method added in one step."""
import pytest
import torch

import vpt_explore as vx
from tests.conftest import small_vit
from vpt_explore.methods import registry
from vpt_explore.methods.registry import MethodSpec, parse_method, register_method, unregister_method


def test_parse_method_returns_the_spec_and_k():
    spec, k = parse_method("partial-2")
    assert (spec.name, k, spec.tunes_backbone, spec.optimizer) == ("partial", 2, True, "adamw")
    spec, k = parse_method("vpt-deep")
    assert (spec.name, k, spec.has_prompts, spec.optimizer) == ("vpt-deep", None, True, "sgd")
    assert parse_method("mlp-3")[0].takes_k and not parse_method("linear")[0].has_prompts
    with pytest.raises(vx.ConfigError, match=r"k=0 must be >= 1"):
        parse_method("partial-0")
    with pytest.raises(vx.ConfigError, match=r"is not known.*did you mean 'vpt-deep'"):
        parse_method("vpt_deep")


def test_methods_list_and_defaults_are_unchanged():
    assert vx.METHODS == ("full", "linear", "partial-1", "mlp-3", "sidetune", "bias", "adapter",
                          "vpt-shallow", "vpt-deep", "vpt+bias", "ensemble", "pad-prompt", "fixed-patch",
                          "random-patch", "conv-pad")
    assert registry.optimizer_for("vpt") == "sgd" and registry.optimizer_for("vpt+bias") == "adamw"
    assert parse_method("vpt-deep")[0].base_lr == registry.DEFAULT_BASE_LR["vpt"]


def _build_toy(backbone, num_classes, cfg, k, options):
    model = vx.PromptedViT(backbone, cfg, num_classes, seed=options["seed"])
    model.head = torch.nn.Sequential(torch.nn.LayerNorm(backbone.embed_dim), model.head)
    return model


def test_a_new_method_is_one_spec_and_one_builder():
    register_method(MethodSpec("toy", _build_toy, has_prompts=True, optimizer="sgd", layers="deep"))
    try:
        assert "toy" in registry.method_names()
        model = vx.make_model("toy", small_vit(depth=2), 3, length=2)
        assert model.method == "toy" and model.cfg.layers == "deep" and model.cfg.length == 2
        opt, _ = vx.training.make_optimizer(model, vx.TrainConfig(), "toy")
        assert isinstance(opt, torch.optim.SGD)
        data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 3)
        hist = vx.train(model, data, None, vx.TrainConfig(epochs=1, batch_size=4, progress=False))
        assert hist.status == "completed"
    finally:
        unregister_method("toy")
    with pytest.raises(vx.ConfigError, match="is not known"):
        vx.make_model("toy", small_vit(depth=2), 3)


def test_default_lrs_and_evaluation_path_are_spec_fields():
    """The optimiser, default lr and fast evaluation of a method come from its spec alone."""
    assert [(s, registry.default_base_lr(s, parse_method(s)[0].optimizer)) for s in ("full", "bias", "vpt-deep")] \
        == [("full", 2e-3), ("bias", 8e-2), ("vpt-deep", 0.1)]
    assert registry.default_base_lr("bias", "sgd") == registry.OTHER_OPTIMIZER_BASE_LR["sgd"] == 5e-3
    assert registry.default_base_lr("linear", "adamw") == 2e-3
    assert registry.default_base_lr("mlp-3", "sgd", dim=384) == pytest.approx(0.1 / 3)
    assert registry.SGD_METHODS == ("linear", "mlp", "sidetune", "vpt-shallow", "vpt-deep", "ensemble",
                                    "pad-prompt", "fixed-patch", "random-patch", "conv-pad", "vpt")
    vit = small_vit(depth=2)
    deep, shallow = vx.make_model("vpt-deep", vit, 3, length=2), vx.make_model("vpt-shallow", vit, 3, length=2)
    assert type(registry.inference_model(deep)).__name__ == "PrefixViT"
    assert registry.inference_model(shallow) is shallow and not shallow.training
    direct = vx.PromptedViT(vit, vx.PromptConfig(length=2), 3)
    assert direct.method == "vpt" and registry.spec_of(direct)[0].name == "vpt"
    assert registry.inference_model(direct) is direct                  # "vpt" does not ask for it
    assert "vpt" not in vx.METHODS and registry.spec_of(torch.nn.Linear(2, 2))[0].name == "vpt"
