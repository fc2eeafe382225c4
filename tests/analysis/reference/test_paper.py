"""Tests for vpt_explore.analysis.reference.paper_numbers: the VPT paper's reference numbers and their checks."""
import json
import shutil

import pytest

from vpt_explore.analysis.reference import paper_numbers as rp
from vpt_explore.errors import ConfigError, DataError, MissingFileError

SHIPPED = rp.PAPER_JSON


def test_spot_values():
    assert rp.paper_value("vpt-deep", "dsprites_loc") == 73.6
    assert rp.paper_value("linear", "dsprites_loc") == 12.5
    assert rp.paper_value("linear", "clevr_count") == 34.3
    assert rp.paper_value("vpt-deep", "clevr_count") == 68.5
    assert rp.paper_value("VPT_Deep", "svhn") == 78.1          # case and '_' forgiven
    assert rp.paper_value("full", "cub") == 87.3
    means = rp.paper_group_means()
    assert (means["vpt-deep"]["natural"], means["vpt-deep"]["specialized"], means["vpt-deep"]["structured"]) \
        == (78.48, 82.43, 54.98)
    assert means["vpt-deep"]["fgvc"] == 89.11
    assert means["full"] == {"fgvc": 88.54, "natural": 75.88, "specialized": 83.36, "structured": 47.64}
    assert means["linear"]["structured"] == 26.84
    assert rp.paper_total_params() == {"full": 24.02, "linear": 1.02, "vpt-shallow": 1.04, "vpt-deep": 1.18}


def test_known_discrepancy_is_kept_and_noted():
    assert rp.paper_value("linear", "cifar") == 63.4
    assert rp.paper_value("linear", "resisc45") == 68.6
    row = [r for r in rp.paper("linear", "natural") if r.task == "cifar"][0]
    assert "64.4" in row.notes and row.confirmed


def test_rows_filter_and_shape():
    groups = rp.paper_groups()
    assert [len(groups[g]) for g in ("fgvc", "natural", "specialized", "structured")] == [5, 7, 4, 8]
    rows = rp.paper("vpt-deep")
    assert len(rows) == 24 and all(isinstance(r, rp.PaperNumber) for r in rows)
    assert {r.task for r in rp.paper("vpt-deep", "structured")} == set(groups["structured"])
    for m in ("full", "linear", "vpt-shallow", "vpt-deep"):
        assert len(rp.paper(m)) == 24, m
    with pytest.raises(Exception):
        rows[0].value = 0.0  # frozen
    assert all(r.confirmed for r in rp.paper(confirmed_only=True))


def test_group_means_recomputed_match_stated():
    checks = rp.check_group_means(tol=0.05, strict=True)
    complete = {m for m in rp.paper_methods() if len(rp.paper(m)) == 24}
    assert {"full", "linear", "vpt-shallow", "vpt-deep", "bias"} <= complete
    for m in complete:
        assert {c.group for c in checks if c.method == m} == {"fgvc", "natural", "specialized", "structured"}
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    dn = [c for c in checks if c.method == "vpt-deep" and c.group == "natural"][0]
    assert abs(dn.recomputed - 549.4 / 7) < 1e-9 and dn.diff <= 0.05


def test_vpt_deep_beats_full_on_20_of_24():
    full = {r.task: r.value for r in rp.paper("full")}
    deep = {r.task: r.value for r in rp.paper("vpt-deep")}
    wins = sum(deep[t] > full[t] for t in full)
    assert wins == rp.paper_headline("deep_beats_full_tasks").value == 20


def test_headlines():
    h = {x.id: x for x in rp.paper_headlines()}
    assert h["storage_shallow_params"].value == 50 * 768 == 38400
    assert h["storage_deep_params"].value == 12 * 50 * 768 == 460800
    assert (h["storage_shallow_percent"].value, h["storage_deep_percent"].value) == (0.04, 0.53)
    assert h["location_prepend_pixel_drop_natural"].value == 6.9
    assert h["location_prepend_pixel_drop_natural"].source == "Fig. 5"
    assert h["location_concat_channel_drop_max"].value == 30
    assert (h["pooling_cls_specialized"].value, h["pooling_imagepool_specialized"].value) == (82.4, 82.3)
    assert h["pooling_cls_specialized"].source == "Fig. 8"
    assert h["gain_dsprites_loc"].baseline_value == 12.5 and h["gain_dsprites_loc"].value == 73.6
    assert round(h["mae_vpt_deep_natural"].value, 1) == 36.0


def test_every_number_has_source_and_consistent_confirmation():
    data = rp.load_paper_data()
    sources = rp.paper_sources()
    entries = []
    for m, md in data["methods"].items():
        entries += list(md.get("per_task", {}).values()) + list(md.get("group_means", {}).values())
        if "total_params" in md:
            entries.append(md["total_params"])
    entries += data["headlines"]
    assert len(entries) > 150
    for e in entries:
        assert isinstance(e["source"], str) and e["source"].strip()
        assert isinstance(e["confirmed"], bool)
        assert e["confirmed"] == bool(e["confirmed_by"])
        assert all(k in sources for k in e["confirmed_by"])
    assert any(not e["confirmed"] for e in entries)   # unconfirmed numbers are marked, not hidden
    assert "63.4" in " ".join(data["notes"]) and "64.4" in " ".join(data["notes"])


def test_unknown_method_and_group():
    with pytest.raises(ConfigError) as ei:
        rp.paper("vpt-dep")
    msg = str(ei.value)
    assert "method='vpt-dep'" in msg and "'vpt-deep'" in msg and "did you mean 'vpt-deep'" in msg
    with pytest.raises(ConfigError, match="group='natrual'.*did you mean 'natural'"):
        rp.paper(group="natrual")
    with pytest.raises(ConfigError, match="headline"):
        rp.paper_headline("nope")
    with pytest.raises(ConfigError, match="task"):
        rp.paper_value("partial-1", "dsprites_loc")   # only FGVC is given for partial-1


def test_missing_file(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "paper_vpt.json"
    monkeypatch.setattr(rp, "PAPER_JSON", missing)
    with pytest.raises(MissingFileError, match="paper_vpt.json"):
        rp.paper()
    with pytest.raises(FileNotFoundError):   # MissingFileError is also a FileNotFoundError
        rp.paper_group_means()


def test_corrupt_json(tmp_path, monkeypatch):
    bad = tmp_path / "paper_vpt.json"
    bad.write_text('{"schema": 1, "groups": ', encoding="utf-8")
    monkeypatch.setattr(rp, "PAPER_JSON", bad)
    with pytest.raises(DataError, match="not valid JSON") as ei:
        rp.paper()
    assert str(bad) in str(ei.value)


def _corrupted(tmp_path, monkeypatch, edit):
    path = tmp_path / f"paper_vpt_{edit.__name__}.json"
    shutil.copy(SHIPPED, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(rp, "PAPER_JSON", path)
    return path


def test_schema_errors_name_the_field(tmp_path, monkeypatch):
    def no_source(d):
        del d["methods"]["vpt-deep"]["per_task"]["dsprites_loc"]["source"]
    path = _corrupted(tmp_path, monkeypatch, no_source)
    with pytest.raises(DataError, match=r"methods\.vpt-deep\.per_task\.dsprites_loc\.source") as ei:
        rp.paper()
    assert str(path) in str(ei.value)

    def wrong_schema(d):
        d["schema"] = 99
    _corrupted(tmp_path, monkeypatch, wrong_schema)
    with pytest.raises(DataError, match="schema"):
        rp.paper_group_means()


def test_group_mean_check_catches_a_wrong_value(tmp_path, monkeypatch):
    def edit(d):
        d["methods"]["vpt-deep"]["per_task"]["dsprites_loc"]["value"] = 63.6   # mean moves by 1.25
    _corrupted(tmp_path, monkeypatch, edit)
    bad = [c for c in rp.check_group_means() if not c.ok]
    assert [(c.method, c.group) for c in bad] == [("vpt-deep", "structured")]
    with pytest.raises(DataError, match="vpt-deep/structured"):
        rp.check_group_means(strict=True)


def test_module_is_stdlib_only():
    import ast
    tree = ast.parse(open(rp.__file__, encoding="utf-8").read())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert mods <= {"__future__", "json", "math", "dataclasses", "pathlib", "typing"}, mods
