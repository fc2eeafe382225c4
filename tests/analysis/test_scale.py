"""The scale lesson (notebook 11): gaps per backbone size, the paper's statements, the shipped study, and
takeaway sentences that carry the numbers of the reference files they were built from."""
import json
from types import SimpleNamespace

import pytest

import vpt_explore as vx
from tests.conftest import assert_words, small_vit
from vpt_explore.analysis.reference import scale


def _reference(path, cells, backbone):
    full = [{"task": t, "method": m, "mean": v, "sd": 0.5, "test_acc": [v] * 3, "base_lr": lr}
            for (t, m), (v, lr) in cells.items()]
    path.write_text(json.dumps({"meta": {"backbone": backbone}, "cells": full}))
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A complete-ish small reference and a main one still being made (no full, no count yet)."""
    small = _reference(tmp_path / "small.json", {
        ("shapes-loc", "linear"): (20.0, 0.1), ("shapes-loc", "vpt-deep"): (22.0, 0.5),
        ("shapes-loc", "full"): (90.0, 0.005),
        ("count", "linear"): (50.0, 0.5), ("count", "vpt-deep"): (56.0, 0.25), ("count", "full"): (80.0, 0.0025),
        ("mnist", "linear"): (60.0, 0.1), ("mnist", "vpt-deep"): (61.0, 0.1), ("mnist", "full"): (85.0, 0.001)},
        "tiny-dino")
    main = _reference(tmp_path / "main.json", {("shapes-loc", "linear"): (60.0, 0.05),
                                               ("shapes-loc", "vpt-deep"): (97.0, 0.05)}, "dinov2-s14-offline")
    monkeypatch.setattr(scale, "SMALL_REFERENCE_FILE", small)
    monkeypatch.setattr(scale, "REFERENCE_FILE", main)
    monkeypatch.setattr(scale, "reference_file", lambda b, px=None: small if b == "tiny-dino" else main)
    return SimpleNamespace(small=small, main=main, tmp=tmp_path)


def _row(rows, a, b, backbone, group):
    return next(r for r in rows if (r["a"], r["b"], r["backbone"], r["group"]) == (a, b, backbone, group))


def test_gaps_compare_only_tasks_both_offline_backbones_ran(fake):
    rows = scale.scale_rows()
    r = _row(rows, "vpt-deep", "linear", "tiny-dino", "structured")
    assert (r["gap"], r["tasks"]) == (2.0, ["shapes-loc"])               # count not run on the main backbone
    assert (r["own_gap"], r["own_tasks"]) == (4.0, ["shapes-loc", "count"])
    assert _row(rows, "vpt-deep", "linear", "dinov2-s14-offline", "structured")["gap"] == 37.0
    assert _row(rows, "vpt-deep", "full", "dinov2-s14-offline", "structured")["gap"] is None
    assert _row(rows, "vpt-deep", "full", "tiny-dino", "structured")["own_gap"] == -46.0
    paper = _row(rows, "vpt-deep", "linear", "ViT-B/16", "structured")
    assert paper["gap"] == pytest.approx(54.98 - 26.84, abs=0.01)         # Table 1 group means
    unmatched = {r["backbone"]: r["gap"] for r in scale.scale_rows(matched=False)
                 if (r["a"], r["b"], r["group"]) == ("vpt-deep", "linear", "structured")}
    assert unmatched["tiny-dino"] == 4.0


def test_takeaways_carry_the_numbers_of_the_files(fake):
    text = "\n".join(scale.takeaways(probe=[], data_scale={}))
    for piece in ("vpt-deep - linear, structured group", "+2.0 on tiny-dino (0.8M) [offline: shapes-loc]",
                  "+37.0 on DINOv2-S/14 (21.5M)", "+28.1 on ViT-B/16 (85.8M)",
                  "the difference moves +35.0 points in vpt-deep's favour",
                  "-46.0 on tiny-dino (0.8M) [offline: shapes-loc, count; not yet run",
                  "not run yet on DINOv2-S/14 (21.5M)", "ahead on ViT-B/16 (85.8M) and behind on tiny-dino (0.8M)"):
        assert piece in text, (piece, text)
    assert "natural" not in text                                         # one size alone: no trend claimed


def test_takeaways_say_when_the_gap_shrinks(fake):
    _reference(fake.main, {("shapes-loc", "linear"): (60.0, 0.05), ("shapes-loc", "vpt-deep"): (59.0, 0.05)},
               "dinov2-s14-offline")
    text = "\n".join(scale.takeaways(probe=[], data_scale={}))
    assert "-1.0 on DINOv2-S/14" in text and "the difference moves -3.0 points in linear's favour" in text
    assert "ahead on tiny-dino (0.8M), ViT-B/16 (85.8M) and level (within 1 point) on DINOv2-S/14 (21.5M)" in text


def test_takeaways_survive_an_empty_main_reference(fake):
    _reference(fake.main, {}, "dinov2-s14-offline")
    text = "\n".join(scale.takeaways(probe=[], data_scale={}))
    assert "not run yet on DINOv2-S/14" in text and "moves" not in text
    assert "not run yet" in scale.format_scale()


def _probe(backbone, patches, cls, task="shapes-loc"):
    return {"task": task, "backbone": backbone, "img_size": 32, "n_train": 1000, "n_test": 500,
            "acc": {"cls": cls, "patch-mean": cls + 1, "patches": patches}}


def test_probe_sentences_follow_the_numbers(fake):
    small, main, count = scale.takeaways(rows=[], data_scale={}, probe=[
        _probe("tiny-dino", 99.8, 32.4), _probe("dinov2-s14-offline", 92.8, 80.2),
        _probe("tiny-dino", 50.8, 68.6, "count")])
    assert "99.8%" in small and "32.4%" in small and "do not route it" in small and "22.0%" in small
    assert "77.8 points below" in small
    assert "route it to [CLS]" in main and "97.0%" in main and "do not" not in main
    assert "no more than [CLS]" in count and "56.0%" in count
    lone = scale.takeaways(rows=[], data_scale={}, probe=[_probe("dinov2-s14-offline", 90.0, 50.0, "count")])[0]
    assert "VPT-deep: not run yet" in lone


def _study(path, backbone="dinov2-s14-offline"):
    rows = [{"fraction": f, "n_train": n, "method": m, "base_lr": 0.1, "acc": a,
             "loss_spiked": (n, m) == (400, "vpt-deep")}
            for f, n, accs in ((0.1, 80, (25.0, 40.0, 20.0)), (0.5, 400, (60.0, 90.0, 85.0)))
            for m, a in zip(("linear", "vpt-deep", "full"), accs)]
    meta = {"backbone": backbone, "img_size": 56, "task": "shapes-loc", "epochs": 10, "seed": 0, "n_test": 500}
    path.write_text(json.dumps({"schema": 1, "probe": {"rows": [_probe("tiny-dino", 99.0, 30.0)]},
                                "data_scale": {"meta": meta, "rows": rows}}))
    return path


def test_data_scale_sentences_and_table(fake):
    path = _study(fake.tmp / "study.json")
    text = "\n".join(scale.takeaways(rows=[], path=path))
    # full has no reference cell yet: its largest point is the study's own (400 images)
    assert ("vpt-deep - full is +20.0 points with 80 training images (30 optimizer steps) and +5.0 with 400 (130 "
            "steps): the difference moves -15.0 points in full's favour") in text
    # linear and VPT-deep have one: the reference (1000 images, 3 seeds: 60.0 and 97.0) is the largest point
    assert ("vpt-deep - linear is +15.0 points with 80 training images (30 optimizer steps) and +37.0 with 1000 (the "
            "reference, 3 seeds; 320 steps): the difference moves +22.0 points in vpt-deep's favour") in text
    assert "99.0%" in text                                               # the shipped probe row is used too
    assert "Caution: vpt-deep's training loss spiked with 400 training images (base_lr 0.1" in text
    assert "linear's training loss" not in text
    yours = {"meta": {"backbone": "dinov2-s14-offline", "img_size": 56, "task": "shapes-loc"},
             "rows": [{"fraction": 0.1, "n_train": 80, "method": "vpt-deep", "acc": 41.5}]}
    table = scale.format_data_scale(yours, path=path)
    assert "41.5" in table and "90.0*" in table and "80 (10%)" in table and "1000 (reference, 3 seeds)" in table
    assert "* the training loss spiked" in table
    assert "97.0" in next(line for line in table.splitlines() if line.startswith("1000"))
    other = dict(yours, meta=dict(yours["meta"], backbone="tiny-dino", img_size=32))
    assert "not comparable" in scale.format_data_scale(other, path=path)
    assert scale.plot_data_scale(yours, path=path).axes[0].get_xscale() == "log"


def test_the_scale_figure_has_both_gaps_on_a_log_axis(fake):
    fig = scale.plot_scale()
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    assert [ax.get_title() for ax in fig.axes] == ["vpt-deep - linear", "vpt-deep - full"]


def test_study_file_errors_name_the_file(tmp_path):
    with pytest.raises(vx.MissingFileError) as e:
        scale.study(tmp_path / "none.json")
    assert_words(e.value, ["none.json", "scale.regenerate"])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(vx.DataError, match="not JSON"):
        scale.study(bad)
    bad.write_text(json.dumps({"probe": []}))
    with pytest.raises(vx.DataError) as e:
        scale.study(bad)
    assert_words(e.value, ["'probe'", "rows"])


def test_run_data_scale_uses_the_reference_lrs_and_the_given_recipe(fake):
    seen = []

    def train(model, data, val, cfg):
        seen.append((len(data), val, cfg))
        return SimpleNamespace(base_lr=cfg.base_lr, amp=None)

    vit = small_vit(depth=1, dim=32)
    out = scale.run_data_scale(train, lambda model, data: {"acc": 0.5}, vit, fractions=(0.1,),
                               methods=("linear", "vpt-deep"), train_kwargs={"epochs": 3}, n_test=20,
                               reference=fake.small, log=lambda s: None)
    assert [(r["method"], r["n_train"], r["base_lr"], r["acc"]) for r in out["rows"]] == [
        ("linear", 80, 0.1, 50.0), ("vpt-deep", 80, 0.5, 50.0)]
    assert all(cfg.epochs == 3 and cfg.batch_size == 32 and val is None for _, val, cfg in seen)
    assert out["meta"]["task"] == "shapes-loc" and out["meta"]["n_test"] == 20
    seen.clear()
    saved = []
    again = scale.run_data_scale(train, lambda model, data: {"acc": 0.25}, vit, fractions=(0.1,),
                                 methods=("linear", "vpt-deep", "full"), train_kwargs={"epochs": 3}, n_test=20,
                                 reference=fake.small, done=out, on_row=lambda r: saved.append(len(r["rows"])),
                                 log=lambda s: None)
    assert len(seen) == 1 and saved == [3]                               # only full ran; the others were kept
    assert [r["acc"] for r in again["rows"]] == [50.0, 50.0, 25.0]
    with pytest.raises(vx.ConfigError) as e:
        scale.run_data_scale(train, None, vit, fractions=(0.1, 1.5))
    assert_words(e.value, ["fractions", "1.5", "(0, 1]"])


def test_param_counts_match_the_architectures():
    import timm
    import torch
    tiny = vx.load_backbone("tiny-dino")
    assert sum(p.numel() for p in tiny.parameters()) == scale.PARAMS["tiny-dino"]
    for key, arch, kw in (("ViT-B/16", "vit_base_patch16_224", {}), ("ViT-L/16", "vit_large_patch16_224", {}),
                          ("ViT-H/14", "vit_huge_patch14_224", {}),
                          ("dinov2-s14-offline", "vit_small_patch14_dinov2", {"img_size": 56})):
        try:
            with torch.device("meta"):  # shapes only: ViT-H would need 2.5 GB
                m = timm.create_model(arch, pretrained=False, num_classes=0, **kw)
        except NotImplementedError:  # timm 1.0.9 (the floor) calls .item() during init, which meta cannot
            pytest.skip("this timm cannot build a ViT on the meta device; the main environment checks the counts")
        assert sum(p.numel() for p in m.parameters()) == scale.PARAMS[key], key


def test_paper_statements_are_labelled_with_their_figure():
    text = scale.paper_statements()
    for fig in ("Paper (Fig. 4", "Paper (Fig. 3", "Paper (Table 5"):
        assert fig in text
    assert all(line.startswith(("Paper (", "(Restated by")) for line in text.splitlines())


def test_the_shipped_study_covers_both_backbones():
    data = scale.study()
    got = {(r["backbone"], r["task"]) for r in data["probe"]["rows"]}
    assert got == {(b, t) for b in ("tiny-dino", "dinov2-s14-offline") for t in ("shapes-loc", "count")}
    assert all(set(r["acc"]) == {"cls", "patch-mean", "patches"} for r in data["probe"]["rows"])
    meta = data["data_scale"]["meta"]
    assert (meta["backbone"], meta["img_size"], meta["task"]) == ("dinov2-s14-offline", 56, "shapes-loc")
    assert {r["method"] for r in data["data_scale"]["rows"]} == set(scale.DATA_METHODS)
    assert scale.COMMAND in meta["command"]
    assert all(any(ch.isdigit() for ch in s) for s in scale.takeaways())   # the real files: no crash, numbers


def test_regenerate_restores_the_callers_threads_even_after_an_error(tmp_path, monkeypatch):
    import torch
    from vpt_explore.analysis.reference import scale as sc

    def boom(*args, **kwargs):
        assert torch.get_num_threads() == 1
        raise KeyboardInterrupt
    monkeypatch.setattr(sc, "_regenerate_parts", boom)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            sc.regenerate(None, None, path=tmp_path / "s.json", threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
