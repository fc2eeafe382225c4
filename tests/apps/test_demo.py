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
        demo.run(methods=(method,), tasks=("digits",), n_train=20, n_test=20, seed=7, backbone="tiny-dino")
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


def test_demo_runs_on_the_cpu_profiles_backbone_with_the_lrs_of_that_backbones_reference(monkeypatch):
    """Default backbone: DINOv2-S at 56 px; lrs from its reference where it has the cell, else the default."""
    from vpt_explore.analysis.reference import offline_runs
    from vpt_explore.training import loop
    seen = []
    monkeypatch.setattr(loop, "train", lambda model, tr, va, cfg: seen.append((model.vit.vpt_name,
                        model.vit.patch_embed.img_size, cfg.base_lr, cfg.amp, cfg.threads)) or
                        __import__("vpt_explore").History(base_lr=cfg.base_lr or 0.1))
    rows = demo.run(methods=("linear",), tasks=("shapes-loc", "faces"), n_train=40, n_test=20)
    ref = offline_runs.cell("shapes-loc", "linear")
    assert seen[0][:2] == ("dinov2-s14-offline", (56, 56)) and seen[0][3:] == ("auto", "auto")
    assert seen[0][2] == (ref["base_lr"] if ref else None)
    assert rows[0]["lr_from"] == ("reference" if ref else "default")
    if offline_runs.cell("faces", "linear") is None:
        assert seen[1][2] is None and rows[1]["lr_from"] == "default"
