"""Notebook 09's ablation plan as data: what each run builds, which runs are the same, and the
resumable results file."""
import json

import pytest

import vpt_explore as vx
from tests.conftest import small_vit
from vpt_explore.training.ablations import (SECTIONS, ablation_plan, build_ablation, load_ablations, rows_for,
                                            run_plan)


def _plan():
    return ablation_plan(length=4, lengths=(1, 4), num_patches=64, depth=4, num_classes=3, fractions=(0.5, 1.0),
                         scale_methods=("linear", "vpt-deep"))


def test_the_plan_covers_every_section_and_trains_each_model_once():
    plan = _plan()
    assert [s for s in SECTIONS if any(a.section == s for a in plan)] == list(SECTIONS)
    by_label = {(a.section, a.label): a for a in plan}
    # the default VPT-deep setup appears in four sections; it is one run
    same = [by_label[("length", "deep p=4")], by_label[("depth", "layers=deep")], by_label[("pool", "pool=cls")],
            by_label[("share", "share=none")]]
    assert len({a.key for a in same}) == 1
    assert by_label[("depth", "layers=shallow")].key == by_label[("location", "prepend (p=4)")].key
    assert len({a.key for a in plan}) == len(plan) - 4
    assert by_label[("location", "add (p=64)")].method == "vpt-shallow"


def test_each_run_builds_what_its_label_says():
    vit, plan = small_vit(depth=4), _plan()
    models = {(a.section, a.label): build_ablation(a, vit, 3, seed=0) for a in plan if a.section != "init"}
    late = models[("depth", "layers=(2, 3)")]
    assert late.prompt_blocks == (2, 3) and late.cfg.dropout == 0.1
    assert models[("location", "concat-channel (p=3)")].cfg.location == "concat-channel"
    assert models[("share", "share=inter")].parameter_report()["groups"]["prompts"] == 4 * 64
    assert models[("data", "linear 50%")].method == "linear"
    assert all(m.vit is vit for m in models.values() if hasattr(m, "vit") and m.method != "full")


def test_run_plan_saves_after_each_run_and_resumes(tmp_path):
    plan, path, calls = _plan(), tmp_path / "abl.json", []

    def fit(a):
        calls.append(a.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return {"accuracy": 0.5, "trainable": 10, "status": "completed"}
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, fit, path, {"backbone": "x"}, progress=False)
    assert len(json.loads(path.read_text())["runs"]) == 2          # the two finished runs are on disk
    calls.clear()
    data = run_plan(plan, lambda a: calls.append(a.key) or {"accuracy": 0.5, "trainable": 10, "status": "completed"},
                    path, {"backbone": "x"}, progress=False)
    assert len(calls) == len({a.key for a in plan}) - 2 and len(data["runs"]) == len({a.key for a in plan})
    rows = rows_for(plan, load_ablations(path), "pool", "toy")
    assert [r["method"] for r in rows] == ["pool=cls", "pool=image", "pool=prompt", "pool=global"]
    with pytest.raises(vx.DataError, match="another setup"):
        run_plan(plan, fit, path, {"backbone": "y"}, progress=False)


def test_the_shipped_runs_belong_to_the_cpu_profiles_plan():
    """Every run in the shipped file is a run of the plan notebook 09 builds in "cpu", made at that
    profile's sizes, so the notebook's lookups by key find them."""
    from vpt_explore.training.ablations import ablations_file
    P = vx.PROFILES["cpu"]
    path = ablations_file(P.backbone, P.img_size)
    if not path.exists():
        pytest.skip("no shipped ablation runs yet (python -m vpt_explore ablations)")
    data = load_ablations(path)
    meta = data["meta"]
    assert (meta["backbone"], meta["img_size"], meta["task"]) == (P.backbone, P.img_size, P.task("structured"))
    assert (meta["protocol"]["n_train"], meta["protocol"]["epochs"]) == (P.n_train, P.epochs)
    C = next(t.num_classes for t in vx.list_tasks() if t.name == meta["task"])
    plan = ablation_plan(P.prompt_length, P.prompt_lengths, (P.img_size // 14) ** 2, 12, C)
    assert set(data["runs"]) <= {a.key for a in plan}
    assert all(0 <= r["accuracy"] <= 1 and r["status"] in ("completed", "diverged") for r in data["runs"].values())
