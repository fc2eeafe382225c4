"""The Training Lab panel without a browser: config mirroring, rules, runs and Stop."""
import html
import re
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ipywidgets")

import vpt_explore as vx  # noqa: E402
from vpt_explore.apps.widgets import PROMPT_FIELDS, TrainingLab, training_lab  # noqa: E402

TINY = dict(task="shapes-loc", train_size=32, n_val=16, n_test=32, batch_size=16, epochs=1)
# ipywidgets names present in both 7.7 (Colab) and 8 that the panel may use
SHARED_API = {"Dropdown", "IntSlider", "FloatLogSlider", "ToggleButtons", "SelectMultiple", "Checkbox",
              "Button", "IntProgress", "Label", "HTML", "Output", "HBox", "VBox", "Layout"}



def wait_until(cond, timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_only_widgets_shared_by_ipywidgets_7_and_8():
    src = Path(vx.widgets.__file__).read_text()
    used = set(re.findall(r"\bW\.([A-Z]\w*)", src))
    assert used and used <= SHARED_API, used - SHARED_API


def test_config_mirrors_the_widgets():
    lab = TrainingLab()
    c = lab.controls
    c["task"].value = "digits"
    c["layers"].value = "last-k"
    c["k"].value = 2
    c["length"].value = 7
    c["location"].value = "prepend-pixel"
    c["share"].value = "inter"
    c["pool"].value = "image"
    c["epochs"].value = 3
    c["train_size"].value = 96
    c["auto_lr"].value = False
    c["base_lr"].value = 0.5
    method, prompt, tcfg, task, backbone = lab.config()
    assert (method, task, backbone) == ("vpt-deep", "digits", vx.backbones.DEFAULT_BACKBONE)
    assert prompt == vx.PromptConfig(length=7, layers=(4, 5), location="prepend-pixel", share="inter", pool="image")
    assert (tcfg.epochs, tcfg.batch_size, tcfg.base_lr) == (3, 32, pytest.approx(0.5))
    c["layers"].value = "first-k"
    assert lab.config()[1].layers == (0, 1)
    c["auto_lr"].value = True
    assert lab.config()[2].base_lr is None and c["base_lr"].disabled
    c["method"].value = "vpt+bias"
    c["layers"].value = "shallow"  # vpt+bias keeps its method; shallow = prompts at block 0 only
    assert lab.config()[0] == "vpt+bias" and lab.config()[1].layers == (0,)
    assert c["k"].max == 6
    if "dinov2-s14-offline" in [value for _, value in c["backbone"].options]:  # 12 blocks; loaded at Train
        c["backbone"].value = "dinov2-s14-offline"
        assert c["k"].max == 12 and lab.config()[4] == "dinov2-s14-offline"
    assert lab.message.value.count("b00020") == 0  # no red error so far


def test_depth_and_method_stay_consistent():
    lab = TrainingLab()
    c = lab.controls
    c["layers"].value = "shallow"
    assert c["method"].value == "vpt-shallow" and "vpt-shallow" in lab.message.value
    assert lab.config()[1].layers == "shallow"
    c["layers"].value = "first-k"  # prompts in several blocks: back to vpt-deep
    assert c["method"].value == "vpt-deep" and not c["k"].disabled and lab.config()[1].layers == (0, 1, 2)
    c["method"].value = "vpt-shallow"
    assert c["layers"].value == "shallow" and c["k"].disabled
    c["method"].value = "vpt-deep"
    assert c["layers"].value == "deep"


def test_add_location_snaps_length_and_explains():
    lab = TrainingLab()
    c = lab.controls
    c["location"].value = "add"
    assert c["length"].value in (1, 64) and "length must be 1 or 64" in lab.message.value
    c["length"].value = 7  # keyboard arrow up from 1: jump to one prompt per patch
    assert c["length"].value == 64
    c["length"].value = 63  # arrow down from 64: back to a single shared vector
    assert c["length"].value == 1
    assert lab.config()[1].length == 1 and not lab.train_button.disabled
    lab.set(length=7)  # the same rule applies to code
    assert c["length"].value in (1, 64)


def test_concat_channel_forces_shallow_and_no_sharing():
    lab = TrainingLab(share="inter")
    c = lab.controls
    c["location"].value = "concat-channel"
    assert (c["layers"].value, c["share"].value, c["method"].value) == ("shallow", "none", "vpt-shallow")
    assert c["layers"].disabled and c["share"].disabled
    prompt = lab.config()[1]
    assert prompt.layers == "shallow" and prompt.location == "concat-channel"
    c["method"].value = "vpt-deep"  # the latest change wins, with a note
    assert c["location"].value == "prepend" and "concat-channel" in lab.message.value
    assert lab.config()[1].layers == "deep"


def test_non_prompt_methods_disable_prompt_controls():
    lab = TrainingLab()
    lab.controls["method"].value = "linear"
    assert all(lab.controls[n].disabled for n in PROMPT_FIELDS)
    assert lab.config()[1].length == 0 and "no prompts" in lab.message.value
    lab.controls["method"].value = "vpt-deep"
    assert not any(lab.controls[n].disabled for n in ("layers", "length", "location", "share", "pool"))


def test_invalid_combination_is_explained_not_raised():
    lab = TrainingLab(location="add", length=1)
    lab.controls["pool"].value = "prompt"  # no prompt tokens to pool when prompts are added
    assert "b00020" in lab.message.value and "pool" in lab.message.value
    assert lab.train_button.disabled
    assert lab.train(block=True) is None and lab.results == []
    lab.controls["pool"].value = "cls"
    assert not lab.train_button.disabled and "b00020" not in lab.message.value


def test_out_of_range_values_leave_a_message_naming_the_field():
    lab = TrainingLab(epochs=0, train_size=5000, length=-3, task="nope", base_lr=1e6)
    msg = lab.message.value
    for field in ("epochs=0", "train size=5000", "length p=-3", "task=", "base lr="):
        assert field in msg, (field, msg)
    c = lab.controls
    assert (c["epochs"].value, c["length"].value, c["task"].value) == (1, 1, "shapes-loc")
    assert lab.config()[2].base_lr == pytest.approx(100.0)
    lab.set(task="faces")  # 107 training images: the size slider follows the task
    assert c["train_size"].value <= 107 and "train size" in lab.message.value
    lab.set(batch_size=0)  # a run option is checked by TrainConfig and shown, not raised
    assert "batch_size=0" in lab.message.value and lab.train_button.disabled
    with pytest.raises(vx.ConfigError, match="did you mean 'epochs'"):
        lab.set(epoch=3)


def test_programmatic_runs_append_rows_and_histories():
    lab = TrainingLab(**TINY, method="vpt-deep", length=2)
    row = lab.train(block=True)
    assert row is not None and row["status"] == "completed"
    assert row["method"] == "vpt-deep" and row["config"] == "deep p=2" and row["task"] == "shapes-loc"
    assert 0.0 <= row["test_acc"] <= 1.0 and row["val_acc"] is not None and row["trainable"] > 0
    assert len(lab.histories) == 1 and lab.histories[0].rows
    assert "image/png" in lab.curves.outputs[0]["data"]
    lab.controls["method"].value = "linear"
    row2 = lab.train(block=True)
    assert row2["method"] == "linear" and row2["config"] == "-" and lab.histories[1].cached_features
    assert len(lab.results) == 2 and lab.table.value.count("<tr>") == 3  # header + 2 runs
    assert lab.stop_button.disabled and not lab.train_button.disabled


def test_errors_during_a_run_are_shown_in_red():
    lab = TrainingLab(**TINY, method="ensemble", location="add", length=1)
    assert lab.train(block=True) is None  # make_model refuses an ensemble without prompt tokens
    assert "b00020" in lab.message.value and "ensemble" in lab.message.value
    assert lab.status.value == "error" and lab.results == []


def test_stop_ends_a_background_run_and_keeps_the_trained_weights():
    lab = TrainingLab(**{**TINY, "epochs": 60}, method="vpt-deep", length=2)
    lab.train()  # background thread, as the Train button does
    assert lab.running and lab.train_button.disabled and not lab.stop_button.disabled
    assert wait_until(lambda: lab.steps_done >= 3), "training did not start"
    model = lab.model
    fresh = vx.make_model("vpt-deep", lab._vits[vx.backbones.DEFAULT_BACKBONE], 8, prompt=lab.config()[1], seed=0)
    lab.stop_button.click()
    assert lab.wait(60), "Stop did not end the run"
    row, hist = lab.results[-1], lab.histories[-1]
    assert row["status"] == "stopped" and len(hist.rows) < 60
    assert lab.model is model and not torch.equal(model.prompts, fresh.prompts)  # trained, kept
    if hist.best_state:  # the best epoch's weights are the ones the model holds
        assert torch.equal(model.prompts.detach(), hist.best_state["prompts"])
    assert not lab.running and lab.stop_button.disabled and not lab.train_button.disabled


def test_training_lab_returns_the_panel():
    lab = training_lab(**TINY)
    assert isinstance(lab, TrainingLab) and lab.widget.children


def test_device_and_backbone_choices_show_what_this_machine_can_run(monkeypatch, tmp_path):
    from vpt_explore.apps import lab_runner
    lab = TrainingLab(probe_network=False)
    c = lab.controls
    assert c["backbone"].value == vx.backbones.DEFAULT_BACKBONE
    labels = dict(c["backbone"].options)
    assert labels["tiny-dino (offline)"] == "tiny-dino" and labels["tiny (offline)"] == "tiny"
    assert not any("hub" in label for label in labels)  # nothing cached, no network probe
    assert list(c["device"].options)[:2] == ["auto", "cpu"]
    assert ("cuda" in c["device"].options) == torch.cuda.is_available()
    lab.set(device="cpu")
    assert lab.config()[2].device == "cpu"
    lab.set(device="tpu")  # not offered here: kept, and the message names the field and the choices
    msg = html.unescape(lab.message.value)
    assert c["device"].value == "cpu" and "device='tpu' is not allowed; choose one of 'auto', 'cpu'" in msg

    # a hub backbone whose weights are in the local cache is listed beside the offline ones
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"")
    monkeypatch.setattr(lab_runner, "cached_weights",
                        lambda name, hub_id=None: str(fake) if hub_id == "timm/vit_base_patch16_224.augreg_in21k"
                        else None)
    monkeypatch.setattr(lab_runner, "hub_reachable", lambda timeout=1.0: pytest.fail("probed the network"))
    labels = dict(lab_runner.available_backbones(environ={"HF_HUB_OFFLINE": "1"}))
    assert labels["vit_base_patch16_224.augreg_in21k (hub, cached)"] == "vit_base_patch16_224.augreg_in21k"
    assert not any("orig_in21k" in label for label in labels)  # not cached, offline: not listed
    monkeypatch.setattr(lab_runner, "hub_reachable", lambda timeout=1.0: True)
    online = dict(lab_runner.available_backbones(environ={}))
    assert "vit_base_patch16_224.orig_in21k (hub, downloads on first run)" in online


def test_paper_setting_sets_the_papers_epochs_size_and_length():
    lab = TrainingLab(probe_network=False, task="faces")  # 107 training images: the size is capped
    lab.paper_button.click()
    c = lab.controls
    assert (c["epochs"].value, c["length"].value) == (100, 50)
    assert c["train_size"].value == lab._task_sizes["faces"] < 800
    assert "paper setting: 100 epochs" in lab.message.value
    lab.set(task="shapes-loc")
    lab.paper_setting()
    assert c["train_size"].value == 800 and c["length"].max >= 200


def test_results_show_training_throughput():
    lab = TrainingLab(probe_network=False, **TINY, method="linear")
    row = lab.train(block=True)
    hist = lab.histories[0]
    assert hist.rows[0]["images"] == TINY["train_size"] and hist.rows[0]["train_seconds"] > 0
    assert row["images_per_s"] == pytest.approx(hist.images_per_s, rel=0.01) and row["images_per_s"] > 0
    assert "img/s" in lab.table.value
    out = lab.curves.outputs[0]["data"]
    assert "width:100%" in out["text/html"] and out["image/png"] in out["text/html"]


def test_the_panel_is_built_without_importing_timm():
    """The Voila page renders once the panel exists: it must not wait for timm (seconds to import)."""
    import subprocess
    import sys
    code = ("import sys; from vpt_explore.apps.widgets import TrainingLab; TrainingLab(probe_network=False); "
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pixel_prompters_train_from_the_lab_with_only_their_length():
    lab = TrainingLab(probe_network=False, **TINY, method="pad-prompt", length=3)
    c = lab.controls
    assert "conv-pad" not in c["method"].options  # every lab backbone is a ViT
    assert not c["length"].disabled and all(c[n].disabled for n in ("layers", "k", "location", "share", "pool"))
    assert "width in pixels" in lab.message.value
    method, prompt, *_ = lab.config()
    assert method == "pad-prompt" and prompt.length == 3
    row = lab.train(block=True)
    assert row["status"] == "completed" and row["config"] == "p=3 px" and row["trainable"] > 0
    lab.set(method="vpt-deep")
    assert not c["location"].disabled and "width in pixels" not in lab.message.value
