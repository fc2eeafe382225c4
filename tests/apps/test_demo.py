"""The demo command: --seed reaches every model, with or without prompts."""
import pytest

from vpt_explore.apps import demo
from vpt_explore.methods import factory


class _Built(Exception):
    pass


@pytest.mark.parametrize("method, has_length", [("linear", False), ("full", False), ("vpt-deep", True)])
def test_seed_reaches_every_method(monkeypatch, method, has_length):
    seen = {}

    def fake_make_model(m, vit, num_classes, **kw):
        seen.update(kw)
        raise _Built
    monkeypatch.setattr(factory, "make_model", fake_make_model)
    with pytest.raises(_Built):
        demo.run(methods=(method,), tasks=("digits",), n_train=20, n_test=20, seed=7)
    assert seen.get("seed") == 7 and ("length" in seen) == has_length


def test_reference_lr_comes_from_the_shipped_reference_else_auto(tmp_path):
    from vpt_explore.analysis.reference import offline, tuned_lr
    c = offline()["cells"][0]
    assert tuned_lr(c["task"], c["method"]) == c["base_lr"]
    assert tuned_lr("faces", "no-such-method") == "auto"
    assert tuned_lr(c["task"], c["method"], path=tmp_path / "missing.json") == "auto"  # no file: search now


def test_demo_cli_rejects_a_bad_base_lr(capsys):
    from vpt_explore.__main__ import main
    assert main(["demo", "--base-lr", "fast"]) == 2
    assert "--base-lr='fast'" in capsys.readouterr().err
