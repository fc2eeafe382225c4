"""The lab's snapping rules, on plain dicts: this file imports no widget."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vpt_explore.apps.lab_rules import snap

ROOT = Path(__file__).resolve().parents[2]
BASE = dict(method="vpt-deep", backbone="tiny", task="shapes-loc", train_size=200, epochs=10, auto_lr=True,
            base_lr=1.0, layers="deep", k=3, length=10, location="prepend", share="none", pool="cls")
GEO = dict(depth=6, n_patches=64)


def after(name, new, **extra):
    values = dict(BASE, **extra)
    old = values[name]
    values[name] = new
    return values, snap(values, name, old, new, **GEO)


def test_layers_shallow_turns_vpt_deep_into_vpt_shallow():
    _, (changes, limits, notes) = after("layers", "shallow")
    assert changes == {"method": "vpt-shallow"} and limits == {} and "eqs. 4-6" in notes[0]
    _, (changes, _, notes) = after("layers", (0, 1), method="vpt-shallow", layers="shallow")
    assert changes == {"method": "vpt-deep"} and "method set to vpt-deep" in notes[0]


def test_method_decides_layers_silently():
    assert after("method", "vpt-shallow")[1] == ({"layers": "shallow"}, {}, [])
    assert after("method", "vpt-deep", method="vpt-shallow", layers="shallow")[1][0] == {"layers": "deep"}


def test_concat_channel_is_shallow_and_unshared():
    _, (changes, _, notes) = after("location", "concat-channel", share="inter")
    assert changes == {"layers": "shallow", "share": "none", "method": "vpt-shallow"} and notes
    _, (changes, _, notes) = after("layers", "deep", location="concat-channel", layers="shallow",
                                   method="vpt-shallow")
    assert changes["location"] == "prepend" and "location set to prepend" in notes[-1]


def test_add_snaps_length_towards_the_users_move():
    assert after("length", 11, location="add")[1][0] == {"length": 64}      # moving up: all patches
    assert after("length", 9, location="add", length=64)[1][0] == {"length": 1}  # moving down: one
    _, (changes, _, notes) = after("location", "add")                            # 10 < 64/2: one
    assert changes == {"length": 1} and "length must be 1 or 64" in notes[0]


def test_backbone_and_task_set_limits_that_clamp():
    values = dict(BASE, backbone="other", k=6)
    changes, limits, _ = snap(values, "backbone", "tiny", "other", depth=4, n_patches=196)
    assert limits == {"k": 4, "length": 200} and changes == {"k": 4}   # the paper's longest p
    changes, limits, _ = snap(values, "backbone", "tiny", "other", depth=4, n_patches=256)
    assert limits == {"k": 4, "length": 256}                           # "add" needs p = patches
    values = dict(BASE, train_size=500)
    changes, limits, notes = snap(values, "task", None, "shapes-loc", **GEO, task_size=100)
    assert limits == {"train_size": 100} and changes == {"train_size": 100} and "set to 100" in notes[0]


def test_the_rules_import_no_widget():
    code = "import sys, vpt_explore.apps.lab_rules; assert 'ipywidgets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_run_config_builds_what_the_controls_describe():
    from vpt_explore.apps.lab_rules import run_config
    from vpt_explore.config import PromptConfig
    from vpt_explore.errors import ConfigError
    v = dict(method="vpt-deep", layers="last-k", k=2, length=7, location="prepend", share="none", pool="cls",
             task="count", train_size=96, epochs=3, auto_lr=False, base_lr=0.5, device="cpu", backbone="tiny-dino")
    opts = {"batch_size": 32, "seed": 1}
    method, prompt, tcfg, task, backbone = run_config(v, kind="tokens", depth=6, task_size=800, options=opts)
    assert prompt == PromptConfig(length=7, layers=(4, 5)) and (task, backbone) == ("count", "tiny-dino")
    assert (tcfg.epochs, tcfg.batch_size, tcfg.base_lr, tcfg.seed, tcfg.device) == (3, 32, 0.5, 1, "cpu")
    assert run_config(dict(v, method="pad-prompt"), kind="pixel", depth=6, task_size=800,
                      options=opts)[1] == PromptConfig(length=7, layers="shallow")
    assert run_config(dict(v, auto_lr=True), kind="none", depth=6, task_size=800, options=opts)[1].length == 0
    with pytest.raises(ConfigError, match=r"train size=96 is larger than the 'count' train split \(50 images\)"):
        run_config(v, kind="tokens", depth=6, task_size=50, options=opts)
