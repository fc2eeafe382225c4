"""Reliability and safety: determinism, crash-safe files, clear errors everywhere users type.

Complements test_train.py (interrupt, NaN, stop, atomic write via a faked crash), test_prompts.py
(PromptConfig errors) and test_tasks.py (task arguments, safe unpickler): here a real process is
killed mid-write, every method is run twice, and the CLI, backbone, task and file entry points
are fed bad input.
"""
import glob
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vpt_explore as vx
from tests.conftest import assert_words, small_vit, toy_data
from vpt_explore.model import prompt_file as files
from vpt_explore.__main__ import main as cli

ROOT = Path(__file__).resolve().parents[1]


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("method", list(vx.methods_for("vit")) + ["partial-2", "mlp-2"])
def test_same_seed_gives_identical_runs_for_every_method(method):
    vit = small_vit(depth=2, dim=32)
    train, val = toy_data(n=24), toy_data(n=12, seed=1)
    runs = []
    for _ in range(2):
        model = vx.make_model(method, vit, 3, length=2, members=2, seed=0)
        hist = vx.train(model, train, val, vx.TrainConfig(epochs=2, batch_size=8, progress=False, seed=0))
        assert hist.status == "completed"
        rows = [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in hist.rows]
        runs.append((rows, [s["loss"] for s in hist.steps], files.trained_state(model), hist.best_epoch))
    (rows0, steps0, state0, best0), (rows1, steps1, state1, best1) = runs
    assert rows0 == rows1 and steps0 == steps1 and best0 == best1
    assert same_state(state0, state1), method


def test_other_seed_gives_other_run():
    vit = small_vit(depth=1)
    out = []
    for seed in (0, 1):
        model = vx.make_model("vpt-deep", vit, 3, length=2, seed=seed)
        vx.train(model, toy_data(), None, vx.TrainConfig(epochs=1, batch_size=16, progress=False, seed=seed))
        out.append(model.prompts.detach().clone())
    assert not torch.equal(*out)


# --------------------------------------------------------------------------- crash-safe writes
FAULT_SCRIPT = r'''
import sys, timm, torch
import vpt_explore as vx
from vpt_explore.model import prompt_file as files

def build(version):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                            embed_dim=64, depth=1, num_heads=2, num_classes=5).eval()
    model = vx.make_model("vpt-shallow", vit, 3, length=2, seed=0)
    model.extra = torch.nn.Parameter(torch.full((12_500_000,), float(version)))  # 50 MB: slow writes
    with torch.no_grad():
        model.prompts.fill_(version)
    return model

if __name__ == "__main__":
    model, version = build(0), 0
    while True:  # version 0, then 1, 2, ... to the same path until killed
        files.save_prompts(model, sys.argv[1])
        version += 1
        with torch.no_grad():
            model.extra.fill_(version)
            model.prompts.fill_(version)
'''


def _wait_for(condition, timeout, what):
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_file(tmp_path):
    """A real process is killed with SIGKILL while save_prompts writes; the old file survives."""
    target = tmp_path / "ckpt.safetensors"
    temps = lambda: glob.glob(str(tmp_path / ".ckpt.safetensors.*.tmp"))  # noqa: E731
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", FAULT_SCRIPT, str(target)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # version 0 is complete once the target exists (os.replace); version 1's temp file follows
        _wait_for(lambda: target.exists() or proc.poll() is not None, 120, "the first write")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        _wait_for(lambda: temps() or proc.poll() is not None, 60, "the second write to start")
        proc.send_signal(signal.SIGKILL)  # mid-write: the temp file exists, os.replace has not run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert temps(), "the kill should have left the half-done temporary file behind"
    state, meta = files.read_prompt_file(target)  # loads: not truncated, not mixed
    ns = {}
    exec(FAULT_SCRIPT, ns)  # the same builder, not run as __main__
    assert same_state(state, files.trained_state(ns["build"](0)))
    assert meta["format"] == files.FORMAT and meta["method"] == "vpt-shallow"


def test_checkpoint_during_training_holds_the_best_epoch(tmp_path):
    vit = small_vit(depth=1)
    model = vx.make_model("vpt-deep", vit, 3, length=2)
    path = tmp_path / "run" / "best.safetensors"
    hist = vx.train(model, toy_data(), toy_data(n=24, seed=3),
                    vx.TrainConfig(epochs=3, batch_size=16, progress=False, checkpoint=str(path)))
    assert hist.status == "completed" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["best.safetensors"]  # no temp files left
    _, meta = files.read_prompt_file(path)
    assert meta["epoch"] == str(hist.best_epoch)
    loaded = vx.PromptedViT.load_prompts(path, vit)
    assert same_state(files.trained_state(loaded), files.trained_state(model))
    x = toy_data(n=4, seed=9).tensors[0]
    assert torch.equal(loaded(x), model.eval()(x))


def test_ctrl_c_keeps_the_checkpoint_of_the_best_epoch(tmp_path):
    vit = small_vit(depth=1)
    model = vx.make_model("vpt-shallow", vit, 3, length=2)
    path = tmp_path / "best.safetensors"

    def ctrl_c(event, hist, m):
        if event == "step" and hist.steps[-1]["step"] == 8:  # mid epoch 3
            raise KeyboardInterrupt
    hist = vx.train(model, toy_data(), toy_data(n=24, seed=3), vx.TrainConfig(
        epochs=5, batch_size=16, progress=False, checkpoint=path), callbacks=[ctrl_c])
    assert hist.status == "interrupted" and len(hist.rows) == 2
    loaded = vx.PromptedViT.load_prompts(path, vit)
    assert same_state(files.trained_state(loaded), files.trained_state(model))  # best weights, on disk too


def test_inf_loss_stops_like_nan():
    vit = small_vit(depth=1)
    model = vx.make_model("linear", vit, 3)

    def blow_up(event, hist, m):
        if event == "step" and hist.steps[-1]["step"] == 4:
            m.head.bias.data.fill_(float("inf"))
    with pytest.warns(RuntimeWarning, match=r"loss became (inf|nan) at epoch 2, step 5"):
        hist = vx.train(model, toy_data(), None, vx.TrainConfig(epochs=3, batch_size=16, progress=False,
                                                                 cache_features=False), callbacks=[blow_up])
    assert hist.status == "nan" and "smaller base_lr or grad_clip" in hist.message
    assert all(torch.isfinite(p).all() for p in model.head.parameters())


# --------------------------------------------------------------------------- the command line
def test_cli_help_runs_as_a_real_process():
    out = subprocess.run([sys.executable, "-m", "vpt_explore", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0 and "usage: python -m vpt_explore" in out.stdout and "demo" in out.stdout


@pytest.mark.parametrize("argv, words", [
    (["demoo"], ["command='demoo'", "did you mean 'demo'", "usage"]),
    (["tsks"], ["did you mean 'tasks'"]),
    (["demo", "--methods", "vpt_deep"], ["method='vpt_deep'", "did you mean 'vpt-deep'"]),
    (["demo", "--methods", "linear", "partial-0"], ["partial-0", "k=0"]),
    (["demo", "--tasks", "mnistt"], ["--tasks='mnistt'", "did you mean 'mnist'"]),
    (["demo", "--epochs", "0"], ["epochs=0", ">= 1"]),
    (["demo", "--n-train", "0"], ["--n-train=0"]),
    (["demo", "--length", "-1"], ["length=-1"]),
])
def test_cli_bad_input_exits_2_with_a_hint(capsys, argv, words):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert_words(err, words)


@pytest.mark.parametrize("argv, words", [
    (["bench"], ["required", "mode"]),
    (["bench", "inferr"], ["invalid choice", "'inferr'"]),
    (["bench", "infer", "--batch", "many"], ["--batch", "invalid int value"]),
    (["bench", "train", "--amp", "int8"], ["--amp", "invalid choice"]),
    (["demo", "--epochs", "three"], ["--epochs", "invalid int value"]),
])
def test_cli_argparse_errors_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_words(err, words)


def test_cli_without_arguments_prints_usage(capsys):
    assert cli([]) == 0 and "commands:" in capsys.readouterr().out


# --------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(name="tinyy"), vx.ConfigError, ["name='tinyy'", "did you mean 'tiny'"]),
    (dict(name=3), vx.ConfigError, ["name=3", "(str)"]),
    (dict(name="tiny", pretrained="no"), vx.ConfigError, ["pretrained='no'", "True or False"]),
    (dict(name="tiny", img_size=64), vx.ConfigError, ["img_size=64", "32 px"]),
    (dict(name="tiny", depth=3), vx.ConfigError, ["['depth']", "timm options"]),
    (dict(name="dinov2-s14-offline", img_size=0), vx.ConfigError, ["img_size=0", "multiple of the patch size"]),
    (dict(name="dinov2-s14-offline", weights="w.safetensors"), vx.ConfigError, ["weights=", "timm name"]),
    (dict(name="vit_tiny_patch16_224", weights="/no/such/w.safetensors"), vx.MissingFileError,
     ["/no/such/w.safetensors", "does not exist"]),
    (dict(name="tiny", weights="/no/such/tiny.safetensors"), vx.MissingFileError, ["/no/such/tiny.safetensors"]),
])
def test_bad_backbone_arguments(kwargs, error, words):
    with pytest.raises(error) as e:
        vx.load_backbone(**kwargs)
    assert_words(e.value, words)


SMALL = dict(img_size=32, patch_size=4, depth=1, num_heads=2, num_classes=5)


def test_weights_file_round_trip_and_other_architecture(tmp_path):
    src = small_vit(depth=1, dim=64)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    vit = vx.load_backbone("vit_tiny_patch16_224", weights=str(path), embed_dim=64, **SMALL)
    assert same_state(vit.state_dict(), src.state_dict()) and vit.vpt_name == "vit_tiny_patch16_224"
    with pytest.raises(vx.PromptFileError) as e:  # d=64 in the file, d=192 in the model
        vx.load_backbone("vit_tiny_patch16_224", weights=str(path), **SMALL)
    msg = str(e.value)
    name, in_file, in_model = re.search(r"fit this backbone: (\S+) has shape (\(.*?\)) in the file but "
                                        r"(\(.*?\)) in the model; the file was made for another architecture",
                                        msg).groups()
    own = timm.create_model("vit_tiny_patch16_224", pretrained=False, **SMALL).state_dict()
    assert in_file == str(tuple(src.state_dict()[name].shape)) and in_model == str(tuple(own[name].shape))
    with pytest.raises(vx.PromptFileError, match=r"head\.(weight|bias) has shape \(5.*\(7.*num_classes=5 to"):
        vx.load_backbone("vit_tiny_patch16_224", weights=str(path), embed_dim=64, **dict(SMALL, num_classes=7))
    with pytest.raises(vx.PromptFileError, match=r"missing \['blocks\.1\."):
        vx.load_backbone("vit_tiny_patch16_224", weights=str(path), embed_dim=64, **dict(SMALL, depth=2))


class Payload:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickled_weights_are_refused_and_never_run(tmp_path, how):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"cls_token": torch.zeros(1, 1, 64), "trap": Payload(sentinel)}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(vx.PromptFileError, match=r"evil\.pth.*weights-only.*pickled code is refused"):
        vx.load_backbone("vit_tiny_patch16_224", weights=str(path), embed_dim=64, **SMALL)
    disguised = tmp_path / "evil.safetensors"  # the same bytes under a safetensors name
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(vx.PromptFileError, match="not a readable safetensors file"):
        vx.load_backbone("vit_tiny_patch16_224", weights=str(disguised), embed_dim=64, **SMALL)
    with pytest.raises(vx.PromptFileError, match="pickle"):
        vx.PromptedViT.load_prompts(disguised, small_vit(depth=1))
    assert not sentinel.exists()


def test_a_prompt_file_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """safetensors begins with its header length (u64, little-endian); a length of 0x...80 made the
    first byte equal a pickle's magic 0x80, and a real VPT-deep file was refused as a pickle."""
    vit = small_vit(depth=1)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=2, layers="deep"), num_classes=3)
    for pad in range(300):  # grow the metadata until the header length ends in 0x80
        path = files.save_prompts(model, tmp_path / "p.safetensors", extra={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    back = vx.PromptedViT.load_prompts(path, vit)
    assert torch.equal(back.layer_prompts(0), model.layer_prompts(0))


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(vx.PromptFileError, match=r"holds a Tensor, not a state dict"):
        vx.load_backbone("vit_tiny_patch16_224", weights=str(path), embed_dim=64, **SMALL)


def test_hub_weights_offline_fail_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    try:
        vit = vx.load_backbone("vit_tiny_patch16_224", img_size=32)
    except vx.MissingFileError as e:
        msg = str(e)
    else:  # pragma: no cover - only where the hub weights happen to be cached
        pytest.skip(f"weights for {vit.vpt_name} are cached on this machine")
    assert time.monotonic() - t0 < 10
    for w in ("'vit_tiny_patch16_224'", "HF_HUB_OFFLINE=1", "weights=", "pretrained=False", "'tiny'"):
        assert w in msg, (w, msg)


# --------------------------------------------------------------------------- make_model / train / config
@pytest.mark.parametrize("args, kwargs, words", [
    (("vpt-deep",), dict(lenght=3), ["'lenght'", "did you mean 'length'"]),
    (("ensemble",), dict(members=0), ["members=0", ">= 1"]),
    (("adapter",), dict(reduction=0), ["reduction=0"]),
    (("linear",), dict(seed=-1), ["seed=-1"]),
    (("vpt-deep",), dict(prompt={"length": 2}), ["prompt={'length': 2}", "PromptConfig"]),
    (("partial-5",), {}, ["partial-5", "1..2"]),
])
def test_bad_make_model_arguments(args, kwargs, words):
    with pytest.raises(vx.ConfigError) as e:
        vx.make_model(args[0], small_vit(depth=2), 3, **kwargs)
    assert_words(e.value, words)


def test_make_model_refuses_a_non_vit():
    with pytest.raises(vx.ConfigError, match="is not a timm model with forward_features"):
        vx.make_model("linear", torch.nn.Linear(3, 3), 2)


@pytest.mark.parametrize("kw, words", [
    (dict(progress="yes"), ["progress='yes'", "True or False"]),
    (dict(compile=1), ["compile=1"]),
    (dict(checkpoint=3), ["checkpoint=3", "file path"]),
    (dict(checkpoint=" "), ["checkpoint=' '", "empty"]),
    (dict(device="gpu"), ["device='gpu'", "'cuda'"]),
    (dict(epochs=2, warmup_epochs=3), ["warmup_epochs=3"]),
    (dict(grad_clip=0), ["grad_clip=0"]),
    (dict(base_lr=float("nan")), ["base_lr=nan"]),
    (dict(seed=1.5), ["seed=1.5"]),
    (dict(label_smoothing=1.0), ["label_smoothing=1.0"]),
    (dict(cache_features="yes"), ["cache_features='yes'"]),
])
def test_bad_train_config_fields(kw, words):
    with pytest.raises(vx.ConfigError) as e:
        vx.TrainConfig(**kw)
    assert_words(e.value, words)


def test_train_refuses_bad_model_config_and_labels():
    vit = small_vit(depth=1)
    fast = vx.TrainConfig(epochs=1, batch_size=4, progress=False)
    with pytest.raises(vx.ConfigError, match=r"model='model' must be a torch module"):
        vx.train("model", toy_data(), None, fast)
    with pytest.raises(vx.ConfigError, match=r"cfg=\{'epochs': 1\} must be a vx.TrainConfig"):
        vx.train(vx.make_model("linear", vit, 3), toy_data(), None, {"epochs": 1})
    x, y = toy_data().tensors
    with pytest.raises(vx.DataError, match=r"train_data has labels of dtype torch.float32.*integers"):
        vx.train(vx.make_model("linear", vit, 3), torch.utils.data.TensorDataset(x, y.float()), None, fast)
    with pytest.raises(vx.DataError, match=r"val_data has labels in \[0, 2\].*num_classes=3"):
        vx.train(vx.make_model("linear", vit, 2), toy_data(classes=2), toy_data(), fast)
    with pytest.raises(vx.DataError, match=r"48x48 pixels.*expects 32x32.*load the task with this backbone"):
        vx.train(vx.make_model("vpt-shallow", vit, 3, length=1),
                 torch.utils.data.TensorDataset(torch.zeros(4, 3, 48, 48), torch.zeros(4, dtype=torch.long)),
                 None, fast)
    with pytest.raises(vx.DataError, match="has no length"):
        vx.train(vx.make_model("linear", vit, 3), None, None, fast)


# --------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("kwargs, words", [
    (dict(name=3), ["name=3", "'mnist'"]),
    (dict(name="mnistt"), ["did you mean 'mnist'"]),
    (dict(name="shapes-loc", split=3), ["split=3", "'train800'"]),
    (dict(name="shapes-loc", split="validation"), ["split='validation'", "'val'"]),
    (dict(name="shapes-loc", fraction="0.5"), ["fraction='0.5'", "(0, 1]"]),
    (dict(name="shapes-loc", n=2.5), ["n=2.5"]),
    (dict(name="shapes-loc", k_shot=True), ["k_shot=True"]),
    (dict(name="shapes-loc", seed="0"), ["seed='0'"]),
    (dict(name="shapes-loc", image_size=(1, 2, 3)), ["image_size=(1, 2, 3)", "(height, width)"]),
    (dict(name="shapes-loc", mean=(0.5, 0.5)), ["mean=(0.5, 0.5)", "three"]),
    (dict(name="shapes-loc", backbone="tiny"), ["backbone='tiny'", "vx.load_backbone('tiny')"]),
    (dict(name="shapes-loc", backbone=torch.nn.Linear(2, 2)), ["Linear is not a timm ViT"]),
    (dict(name="shapes-loc", split="val", k_shot=1000), ["k_shot=1000", "only", "split 'val'"]),
])
def test_bad_task_arguments(kwargs, words):
    with pytest.raises(vx.ConfigError) as e:
        vx.load_task(**kwargs)
    assert_words(e.value, words)


def test_task_accepts_a_prompted_model_as_backbone():
    vit = small_vit(depth=1)
    ds = vx.load_task("shapes-loc", "val", vx.make_model("linear", vit, 3), n=4)
    assert ds.images.shape == (4, 3, 32, 32)


# --------------------------------------------------------------------------- prompt files
@pytest.fixture
def saved(tmp_path):
    """A real prompt file, its tensors and metadata, and the backbone it belongs to."""
    vit = small_vit(depth=2)
    path = vx.make_model("vpt-deep", vit, 3, length=2).save_prompts(tmp_path / "good.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    return vit, state, meta


def _craft(tmp_path, state, meta, name="bad.safetensors"):
    path = tmp_path / name
    save_file(state, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("change, words", [
    (dict(prompt_config="{not json"), ["broken metadata", "'prompt_config'", "JSONDecodeError"]),
    (dict(prompt_config="[1, 2]"), ["broken metadata", "JSON objects"]),
    (dict(prompt_config='{"length": 2, "colour": "red"}'), ["cannot rebuild", "colour"]),
    (dict(backbone_depth="two"), ["broken metadata", "'backbone_depth'"]),
    (dict(num_classes=""), ["broken metadata", "'num_classes'"]),
    (dict(method="vpt_deep"), ["cannot rebuild", "did you mean 'vpt-deep'"]),
    (dict(method_kwargs='{"members": 0}'), ["cannot rebuild"]),
    (dict(format="something/else"), ["not a vpt_explore prompt file", "something/else"]),
])
def test_prompt_file_with_bad_metadata(tmp_path, saved, change, words):
    vit, state, meta = saved
    path = _craft(tmp_path, state, {**meta, **change})
    with pytest.raises(vx.PromptFileError) as e:
        vx.load_model(path, vit)
    assert_words(e.value, words)


def test_prompt_file_without_format_tag_or_fields(tmp_path, saved):
    vit, state, meta = saved
    plain = _craft(tmp_path, state, {"hello": "world"}, "plain.safetensors")
    with pytest.raises(vx.PromptFileError, match=r"not a vpt_explore prompt file \(format=None"):
        vx.PromptedViT.load_prompts(plain, vit)
    no_meta = tmp_path / "no_meta.safetensors"
    save_file(state, str(no_meta))
    with pytest.raises(vx.PromptFileError, match="not a vpt_explore prompt file"):
        files.read_prompt_file(no_meta)
    lacking = _craft(tmp_path, state, {k: v for k, v in meta.items() if k != "backbone_fingerprint"})
    with pytest.raises(vx.PromptFileError, match=r"broken metadata: field 'backbone_fingerprint'"):
        vx.PromptedViT.load_prompts(lacking, vit)


def test_prompt_file_with_wrong_missing_or_extra_tensors(tmp_path, saved):
    vit, state, meta = saved
    wrong = _craft(tmp_path, {**state, "prompts": torch.zeros(2, 3, 64)}, meta)
    with pytest.raises(vx.PromptFileError) as e:
        vx.PromptedViT.load_prompts(wrong, vit)
    assert "'prompts'" in str(e.value) and "(2, 3, 64)" in str(e.value) and "(2, 2, 64)" in str(e.value)
    missing = _craft(tmp_path, {k: v for k, v in state.items() if k != "head.weight"}, meta, "m.safetensors")
    with pytest.raises(vx.PromptFileError, match=r"lacks tensor 'head.weight'.*incomplete"):
        vx.PromptedViT.load_prompts(missing, vit)
    extra = _craft(tmp_path, {**state, "backdoor": torch.zeros(1)}, meta, "e.safetensors")
    with pytest.raises(vx.PromptFileError, match=r"tensor 'backdoor' is unknown"):
        vx.PromptedViT.load_prompts(extra, vit)


def test_prompt_file_garbage_bytes_and_empty_file(tmp_path, saved):
    vit = saved[0]
    for name, data in (("empty.safetensors", b""), ("noise.safetensors", bytes(range(1, 256)) * 16),
                       ("json.safetensors", json.dumps({"prompts": [1, 2]}).encode())):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(vx.PromptFileError, match="not a valid safetensors prompt file"):
            vx.PromptedViT.load_prompts(path, vit)


def test_saving_to_a_folder_names_the_problem(tmp_path):
    model = vx.make_model("linear", small_vit(depth=1), 3)
    with pytest.raises(vx.ConfigError, match=r"is a folder; give a file name"):
        model.save_prompts(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_models_built_directly_round_trip(tmp_path):
    """A PromptedViT made without make_model (method 'vpt'), with [CLS]-init prompts, loads back."""
    vit = small_vit(depth=2)
    data = toy_data(n=12, classes=2)
    model = vx.PromptedViT(vit, vx.PromptConfig(length=2, init="cls"), 2, init_data=data).eval()
    loaded = vx.PromptedViT.load_prompts(model.save_prompts(tmp_path / "d.safetensors"), vit)
    x = data.tensors[0][:3]
    assert loaded.cfg == model.cfg and torch.equal(loaded(x), model(x))


def test_promptedvit_load_prompts_sends_other_methods_to_load_model(tmp_path):
    """PromptedViT.load_prompts rebuilds plain PromptedViT files; an adapter file names vx.load_model."""
    vit = small_vit(depth=2)
    deep = vx.make_model("vpt-deep", vit, 3, length=2).eval()
    back = vx.PromptedViT.load_prompts(deep.save_prompts(tmp_path / "d.safetensors"), vit)
    assert back.method == "vpt-deep" and back.cfg == deep.cfg
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), deep(x))
    path = vx.make_model("adapter", vit, 3).save_prompts(tmp_path / "a.safetensors")
    with pytest.raises(vx.PromptFileError, match=r"holds a 'adapter' model; vx.load_model\(path, vit\)"):
        vx.PromptedViT.load_prompts(path, vit)
    assert vx.load_model(path, vit).method == "adapter"
