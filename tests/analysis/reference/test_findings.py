"""Findings built from the offline reference: fair group means, the targets, gap sentences, the README."""
import json
import re
from pathlib import Path

import pytest

import vpt_explore as vx
from vpt_explore.analysis.reference import findings, offline_runs

README = Path(__file__).resolve().parents[3] / "README.md"


def write(tmp_path, means):
    """A reference file with one cell per (task, method) -> mean; sd 1, three seeds."""
    cells = [{"task": t, "method": m, "mean": v, "sd": 1.0, "test_acc": [v - 1, v, v + 1], "base_lr": 0.1,
              "trainable": 10 if m != "full" else 1000} for (t, m), v in means.items()]
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"meta": {"backbone": "tiny-dino", "fingerprint": "x" * 32, "seeds": [0, 1, 2],
                                         "protocol": {"epochs": 10, "batch_size": 32, "length": 10,
                                                      "weight_decay": 1e-4}, "command": "cmd", "machine": "m"},
                                "cells": cells}))
    return path


def full_grid(tasks, value):
    return {(t, m): value(t, m) for t in tasks for m in offline_runs.METHODS}


def test_group_means_count_only_tasks_every_method_ran(tmp_path):
    means = full_grid(["count"], lambda t, m: 50.0)
    means[("shapes-loc", "linear")] = 10.0           # shapes-loc is incomplete: left out of the means
    path = write(tmp_path, means)
    assert offline_runs.complete_tasks(path) == ["count"]
    assert offline_runs.group_means(path)["linear"] == {"structured": 50.0}


def test_targets_met_and_not_met(tmp_path):
    deep = {"shapes-loc": 60.0, "count": 40.0, "textures": 80.0, "mnist": 70.0}
    path = write(tmp_path, full_grid(list(deep), lambda t, m: deep[t] if m == "vpt-deep" else
                                     {"linear": 30.0, "full": deep[t] + 1, "vpt-shallow": 35.0}.get(m, 20.0)))
    rows = {r["target"]: r for r in findings.targets(path)}
    assert rows["VPT-deep - linear >= 15 on shapes-loc"]["met"] is True
    assert rows["VPT-deep - linear >= 15 on count"]["met"] is False        # 40 - 30 = 10
    assert rows["VPT-deep >= VPT-shallow on the structured group"]["met"] is True
    assert rows["VPT-deep within 3 points of full (or above) in >= 2 of 3 groups"]["met"] is True
    assert rows["VPT-deep trains <= 2% of the parameters (incl. head, vs full)"]["met"] is True
    text = findings.format_targets(path)
    assert "NOT MET  VPT-deep - linear >= 15 on count: +10.0 points" in text


def test_gap_sentence_carries_its_numbers_and_the_papers(tmp_path):
    path = write(tmp_path, full_grid(["shapes-loc"], lambda t, m: 70.0 if m == "vpt-deep" else 20.0))
    text = findings.gap_sentence("vpt-deep", "linear", task="shapes-loc", path=path)
    assert "70.0 +- 1.0%" in text and "+50.0 points" in text and "Paper, ViT-B/16 on dsprites_loc: 73.6 vs 12.5" in text
    with pytest.raises(vx.ConfigError):
        findings.gap_sentence("vpt-deep", "linear", path=path)


@pytest.mark.parametrize("marker, path", [("reference", None), ("small-reference", offline_runs.SMALL_REFERENCE_FILE)])
def test_readme_shows_the_shipped_references_exactly(marker, path):
    text = README.read_text()
    block = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", text, re.S)
    assert block, f"README lacks the generated {marker} block"
    assert block.group(1) == findings.readme_block(path), \
        f"README's {marker} block is stale: run `python -m vpt_explore reference --markdown` (--out FILE) and paste it"


def test_readme_prose_matches_the_small_reference():
    """The README's sentences about tiny-dino's reference, checked against it (update both together)."""
    from vpt_explore.analysis.reference import cell, group_means, offline
    path = offline_runs.SMALL_REFERENCE_FILE
    text = README.read_text()
    tasks = {c["task"] for c in offline(path)["cells"]}
    pairs = [(cell(t, "vpt-deep", path), cell(t, "linear", path)) for t in tasks]
    gaps = [d["mean"] - lin["mean"] for d, lin in pairs if d and lin]
    assert "VPT-deep stays within 4 points of a\nlinear probe on every task run" in text and max(map(abs, gaps)) <= 4
    g = group_means(path)
    assert "VPT-deep beats VPT-shallow on the structured group" in text
    assert g["vpt-deep"]["structured"] > g["vpt-shallow"]["structured"]
    assert g["full"]["structured"] - g["vpt-deep"]["structured"] > 20  # "full fine-tuning is far ahead"


def test_key_sentences_carry_the_numbers_and_skip_cells_not_run(tmp_path):
    path = write(tmp_path, full_grid(["shapes-loc"], lambda t, m: 70.0 if m == "vpt-deep" else 20.0))
    lines = findings.key_sentences(path)
    assert lines[0].startswith("On shapes-loc, vpt-deep scores 70.0 +- 1.0% and linear 20.0 +- 1.0%")
    assert not any("count" in line for line in lines)               # count was not run: no sentence
    assert sum("structured group" in line for line in lines) == 3  # vs linear, vs shallow, vs full
    assert all("+50.0 points" in line for line in lines)


def test_readme_prose_matches_the_main_reference_and_the_shipped_studies():
    """The hand-written sentences about DINOv2-S's reference quote numbers from the shipped files."""
    from vpt_explore.analysis.reference import cell, scale
    from vpt_explore.apps import precomputed
    text = " ".join(README.read_text().split())
    deep, lin = cell("shapes-loc", "vpt-deep"), cell("shapes-loc", "linear")
    probe = next(r for r in scale.study()["probe"]["rows"]
                 if r["backbone"] == "dinov2-s14-offline" and r["task"] == "shapes-loc")
    assert f"reads `shapes-loc` at {probe['acc']['cls']:.1f}% on DINOv2-S, against the protocol's {lin['mean']:.1f}%" in text
    assert (f"VPT-deep's lead over a *converged* linear read-out is {deep['mean'] - probe['acc']['cls']:.1f} points "
            f"({deep['mean']:.1f} vs {probe['acc']['cls']:.1f}), not {deep['mean'] - lin['mean']:.1f}") in text
    acc = float(precomputed.load("shapes-loc", "vpt-deep")[1]["test_acc"])
    assert f"(the shipped notebook-08 model) reached {100 * acc:.1f}%" in text
    assert f"bf16's {' / '.join(f'{a:.1f}' for a in deep['test_acc'])}% ({deep['mean']:.1f} ± {deep['sd']:.1f})" in text
