"""`python -m vpt_explore ...`: the demo and listing commands run offline and say what they did."""
import json

from vpt_explore.__main__ import main


def test_demo_smoke_prints_table_and_saves_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--methods", "linear", "vpt-deep", "--tasks", "digits", "shapes-loc", "--epochs", "1",
               "--n-train", "64", "--n-test", "64", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "method" in text and "vpt-deep" in text and "digits" in text and "shapes-loc" in text
    assert (out / "demo.png").stat().st_size > 10_000
    rows = json.loads((out / "results.json").read_text())
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in ("digits", "shapes-loc")
                                                        for m in ("linear", "vpt-deep")}
    lin = next(r for r in rows if r["method"] == "linear")
    deep = next(r for r in rows if r["method"] == "vpt-deep")
    assert lin["cached"] and not deep["cached"]                  # linear probe ran on cached features
    assert deep["trainable"] == 12 * 10 * 384 + lin["trainable"]  # p=10 prompts in each of DINOv2-S's 12 blocks
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_tasks_and_backbones_listings(capsys):
    assert main(["tasks"]) == 0
    text = capsys.readouterr().out
    for name in ("mnist", "textures", "shapes-loc", "count", "dist", "fashion-mnist"):
        assert name in text
    assert main(["backbones"]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "dinov2-s14-offline" in text and "orig_in21k" in text


def test_every_command_in_the_table_resolves_and_is_listed(capsys):
    """Each row of COMMANDS names a function that imports, and the usage lists every command."""
    from vpt_explore.__main__ import COMMANDS, USAGE, _function
    assert len({name for name, _, _ in COMMANDS}) == len(COMMANDS)
    for name, text, target in COMMANDS:
        assert callable(_function(target)), name
        assert f"  {name} " in USAGE and text in USAGE
    assert main(["--help"]) == 0 and capsys.readouterr().out.strip() == USAGE


def test_unknown_command_names_the_choices(capsys):
    assert main(["refrence"]) == 2
    err = capsys.readouterr().err
    assert "command='refrence'" in err and "'reference'" in err
