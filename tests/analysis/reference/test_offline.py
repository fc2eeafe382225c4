"""The offline reference: its file, the protocol runner, the verdict and reproduce's errors."""
import json
import statistics

import pytest

import vpt_explore as vx
from vpt_explore.analysis.reference import offline_runs as ro
from vpt_explore.apps import reproduce as rp
from vpt_explore.training import reference_runs as rr

from tests.conftest import assert_words


def test_shipped_reference_is_consistent_with_its_own_runs():
    data = ro.offline()
    assert data["meta"]["backbone"] == "dinov2-s14-offline" and data["meta"]["command"].startswith("python -m vpt_explore")
    assert data["cells"], "the shipped reference has no cells"
    for c in data["cells"]:
        assert c["method"] in ro.METHODS and c["task"] in ro.TASK_ORDER
        assert len(c["test_acc"]) == len(data["meta"]["seeds"]) == 3
        assert c["mean"] == pytest.approx(statistics.fmean(c["test_acc"]), abs=0.01)
        assert c["sd"] == pytest.approx(statistics.stdev(c["test_acc"]), abs=0.01)


def test_shipped_references_were_made_with_the_backbones_they_name():
    from vpt_explore.backbones import fingerprint
    meta = ro.offline()["meta"]
    assert (meta["backbone"], meta["img_size"]) == (ro.MAIN_BACKBONE, ro.MAIN_IMG_SIZE) == ("dinov2-s14-offline", 56)
    assert meta["fingerprint"] == fingerprint(vx.load_backbone("dinov2-s14-offline", img_size=56))
    assert ro.offline(ro.SMALL_REFERENCE_FILE)["meta"]["fingerprint"] == fingerprint(vx.load_backbone("tiny-dino"))


def test_missing_and_corrupt_reference_files_are_clear_errors(tmp_path):
    with pytest.raises(vx.MissingFileError) as e:
        ro.offline(tmp_path / "nope.json")
    assert_words(e.value, ["nope.json", "does not exist", "python -m vpt_explore reference"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(vx.DataError) as e:
        ro.offline(bad)
    assert_words(e.value, ["bad.json", "corrupt", "regenerate"])
    bad.write_text(json.dumps({"meta": {}, "cells": [{"task": "count"}]}))
    with pytest.raises(vx.DataError) as e:
        ro.offline(bad)
    assert_words(e.value, ["cell 0", "mean", "method"])


def test_verdict_uses_the_reference_spread_with_a_two_point_floor():
    ref = {"mean": 50.0, "sd": 0.5}
    assert ro.verdict([51.0, 52.0, 53.0], ref) == "within"     # 52 is 2 points away: inside the floor
    assert ro.verdict([53.0, 53.0], ref) == "above"
    assert ro.verdict([40.0], {"mean": 50.0, "sd": 6.0}) == "within"  # 2 sd = 12
    assert ro.verdict([40.0], ref) == "below"


def test_reproduce_rejects_unknown_task_method_and_seeds():
    with pytest.raises(vx.ConfigError) as e:
        rp.reproduce("shapes-lok", "vpt-deep")
    assert_words(e.value, ["task", "'shapes-lok'", "shapes-loc"])
    with pytest.raises(vx.ConfigError) as e:
        rp.reproduce("count", "vpt-deeper")
    assert_words(e.value, ["method", "'vpt-deeper'", "vpt-deep"])
    with pytest.raises(vx.ConfigError) as e:
        rp.reproduce("count", "linear", seeds=0)
    assert_words(e.value, ["seeds", "0", ">= 1"])


def test_cli_reproduce_errors_exit_2(capsys):
    from vpt_explore.__main__ import main
    assert main(["reproduce", "--task", "nope", "--method", "linear"]) == 2
    assert "task='nope'" in capsys.readouterr().err


def test_run_protocol_smoke_and_regenerate_resumes(tmp_path, monkeypatch):
    vit = vx.load_backbone("tiny")
    cell = rr.run_protocol("count", "linear", vit, seeds=(0, 1), progress=False, n=24, epochs=1)
    assert cell["task"] == "count" and len(cell["test_acc"]) == 2 and cell["base_lr"] > 0
    assert cell["search"] and all("val_acc" in r for r in cell["search"])
    calls = []
    monkeypatch.setattr(rr, "run_protocol", lambda task, method, *a, **k: calls.append((task, method)) or
                        {"task": task, "method": method, "mean": 1.0, "sd": 0.0, "test_acc": [1.0]})
    out = tmp_path / "ref.json"
    rr.regenerate("tiny", ["count"], ["linear", "mlp-3"], 1, out)
    rr.regenerate("tiny", ["count", "dist"], ["linear", "mlp-3"], 1, out)   # resumes: only dist is new
    assert calls == [("count", "linear"), ("count", "mlp-3"), ("dist", "linear"), ("dist", "mlp-3")]
    assert len(ro.offline(out)["cells"]) == 4


def test_regenerate_resumes_inside_a_cell_at_the_seed_it_was_running(tmp_path, monkeypatch):
    """A run killed after seed 0 keeps its lr search and seed 0; the next call runs seeds 1 and 2 only."""
    out = tmp_path / "ref.json"
    trained = []
    real_train = rr.train

    def train_then_die(model, data, val, cfg, **kw):
        trained.append(cfg.seed)
        if len(trained) == 2:
            raise KeyboardInterrupt  # the session ends during seed 1
        return real_train(model, data, val, cfg, **kw)

    monkeypatch.setattr(rr, "train", train_then_die)
    real_run = rr.run_protocol
    monkeypatch.setattr(rr, "run_protocol", lambda *a, **k: real_run(*a, **dict(k, n=24, epochs=1)))
    with pytest.raises(KeyboardInterrupt):
        rr.regenerate("tiny", ["count"], ["linear"], 3, out)
    saved = json.loads(out.read_text())
    assert saved["cells"] == [] and saved["partial"]["count|linear"]["seeds"] == [0]
    searches = []
    monkeypatch.setattr(rr, "find_base_lr", lambda *a, **k: searches.append(1))
    monkeypatch.setattr(rr, "train", real_train)
    trained.clear()
    monkeypatch.setattr(rr, "train", lambda m, d, v, cfg, **kw: trained.append(cfg.seed) or real_train(m, d, v, cfg))
    data = rr.regenerate("tiny", ["count"], ["linear"], 3, out)
    assert searches == [] and trained == [1, 2]
    c = data["cells"][0]
    assert c["seeds"] == [0, 1, 2] and len(c["test_acc"]) == 3 and data["partial"] == {}
    assert c["test_acc"][0] == saved["partial"]["count|linear"]["test_acc"][0]


def test_regenerate_refuses_a_file_of_another_backbone_or_resolution(tmp_path, monkeypatch):
    monkeypatch.setattr(rr, "run_protocol", lambda task, method, *a, **k:
                        {"task": task, "method": method, "mean": 1.0, "sd": 0.0, "test_acc": [1.0]})
    from vpt_explore.training import recipe
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "ref.json"
    rr.regenerate("tiny", ["count"], ["linear"], 1, out)  # amp="auto": bf16 here
    with pytest.raises(vx.DataError) as e:
        rr.regenerate("tiny-dino", ["count"], ["linear"], 1, out)
    assert_words(e.value, ["ref.json", "fingerprint", "tiny-dino", "--out", "delete"])
    with pytest.raises(vx.DataError) as e:
        rr.regenerate("tiny", ["count"], ["linear"], 1, out, amp=None)
    assert_words(e.value, ["amp='bf16'", "None", "--out"])


def test_reproduce_can_refit_at_the_references_lr_in_fp32(monkeypatch):
    """`reproduce --amp none --reuse-lr`: no search, the reference's lr, fp32 (bf16 vs fp32 on one cell)."""
    c = ro.offline()["cells"][0]
    seen = {}
    monkeypatch.setattr(rp, "run_protocol", lambda task, method, vit, seeds, amp, partial: seen.update(
        amp=amp, partial=partial, px=vit.patch_embed.img_size) or {**c, "amp": amp})
    out = rp.reproduce(c["task"], c["method"], seeds=1, amp=None, reuse_lr=True)
    assert seen["amp"] is None and seen["partial"]["base_lr"] == c["base_lr"] and seen["px"] == (56, 56)
    assert out["verdict"] == "within"
    monkeypatch.setattr(rp, "cell", lambda *a: None)  # a cell the reference has not run
    with pytest.raises(vx.ConfigError) as e:
        rp.reproduce("faces", "mlp-3", reuse_lr=True)
    assert_words(e.value, ["reuse_lr=True", "(faces, mlp-3)", "not been run"])
