"""Course profiles: resolution, the "gpu" profile's checks and fallback, AMP selection (all on CPU).

Every "gpu" path has a stand-in here: CUDA availability is patched, an empty Hugging Face cache
and a blocked socket stand in for "offline", a fake cache entry for "weights cached", a local
safetensors file for the hub download and a written folder for VTAB-1k.
"""
import socket
import time

import pytest
import torch
from tests.conftest import assert_words

import vpt_explore as vx
from vpt_explore.training import profiles as P
from vpt_explore.errors import ConfigError, MissingFileError

GPU = P.PROFILES["gpu"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(P, "_cuda_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(P, "_cuda_available", lambda: True)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """An empty Hugging Face and torch hub cache, whatever this machine has cached."""
    import huggingface_hub.constants as hf
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the network was touched")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def fake_hub_cache(cache, repo_id, filename="model.safetensors"):
    """Lay out one cached file the way huggingface_hub does (refs/main -> snapshots/<rev>/file)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / filename).write_bytes(b"stand-in")


def fake_vtab(root, tasks=("cifar", "eurosat", "clevr_count")):
    for t in tasks:
        (root / t).mkdir(parents=True)
        (root / t / "train800.txt").write_text("images/train800/000000.jpg 0\n")
    return root


# --------------------------------------------------------------------------- the table
def test_profile_table_holds_the_papers_setting():
    assert list(P.PROFILES) == ["fast", "cpu", "gpu"]
    fast, cpu = P.PROFILES["fast"], P.PROFILES["cpu"]
    assert fast.epochs == 2 and 64 <= fast.n_train <= 160 and fast.backbone == "tiny-dino"
    assert (cpu.backbone, cpu.img_size, cpu.n_train, cpu.n_val, cpu.n_test, cpu.epochs, cpu.batch_size) == (
        "dinov2-s14-offline", 56, 800, 200, 500, 10, 32)
    assert cpu.prompt_length == 10 and cpu.amp == "auto" and cpu.threads == "auto"
    assert cpu.train_kwargs()["threads"] == "auto" and cpu.train_kwargs()["amp"] == "auto"
    assert GPU.backbone == "vit_base_patch16_224.augreg_in21k" and GPU.img_size == 224
    assert (GPU.prompt_length, max(GPU.prompt_lengths), GPU.epochs, GPU.warmup_epochs) == (50, 200, 100, 10)
    assert GPU.batch_size in (64, 128) and GPU.amp == "bf16" and GPU.device == "cuda"
    assert GPU.lr_grid == (50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05)
    assert GPU.n_train + GPU.n_val == 1000 and GPU.prompt_dropout == 0.1
    assert all(name.startswith("vtab/") for name in GPU.task_names)
    table = P.format_profiles()
    assert all(f"| {n} |" in table for n in P.PROFILES)


def test_profiles_feed_train_config():
    for p in P.PROFILES.values():
        cfg = vx.TrainConfig(**p.train_kwargs())
        assert (cfg.epochs, cfg.batch_size, cfg.amp) == (p.epochs, p.batch_size, p.amp)


def test_profile_fields_are_checked():
    with pytest.raises(ConfigError) as e:
        P.PROFILES["cpu"].replace(epochs=0)
    assert_words(e.value, ["epochs=0", ">= 1"])
    with pytest.raises(ConfigError) as e:
        P.PROFILES["cpu"].replace(amp="bf61")
    assert_words(e.value, ["amp", "'bf61'", "'bf16'", "did you mean"])
    with pytest.raises(ConfigError):
        P.PROFILES["cpu"].task("natrual")
    assert P.PROFILES["cpu"].task("structured") == "shapes-loc"


# --------------------------------------------------------------------------- resolution
def test_resolution_order(fake_cuda):
    assert P.resolve_profile("cpu", environ={}).name == "cpu"
    assert P.resolve_profile(environ={"VPT_PROFILE": "fast"}).name == "fast"
    assert P.resolve_profile(environ={"VPT_FAST": "1"}).name == "fast"
    assert P.resolve_profile(environ={"VPT_PROFILE": "cpu", "VPT_FAST": "1"}).name == "cpu"
    assert P.resolve_profile("CPU", environ={"VPT_PROFILE": "fast"}).name == "cpu"
    assert P.resolve_profile(environ={}).name == "gpu"  # chosen by the (fake) device


def test_resolution_by_device_without_gpu(no_cuda):
    assert P.resolve_profile(environ={}).name == "cpu"
    assert P.resolve_profile(environ={"VPT_FAST": "0"}).name == "cpu"


def test_resolution_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("VPT_PROFILE", "fast")
    assert P.resolve_profile().name == "fast"


def test_unknown_profile_names_field_value_and_choices():
    with pytest.raises(ConfigError) as e:
        P.resolve_profile("gpus", environ={})
    assert_words(e.value, ["profile", "'gpus'", "'fast'", "'cpu'", "'gpu'", "did you mean 'gpu'"])
    with pytest.raises(ConfigError) as e:
        P.resolve_profile(environ={"VPT_PROFILE": "laptop"})
    assert_words(e.value, ["'laptop'", "VPT_PROFILE", "'cpu'"])


def test_gpu_without_gpu_raises_or_falls_back(no_cuda, capsys):
    with pytest.raises(ConfigError) as e:
        P.resolve_profile("gpu", environ={})
    assert_words(e.value, ["'gpu'", "CUDA GPU", "PROFILE = 'cpu'", "Colab"])
    assert P.resolve_profile("gpu", environ={}, fallback=True).name == "cpu"
    out = capsys.readouterr().out
    assert_words(out, ["'gpu' cannot run here", "using 'cpu'", "torch.cuda.is_available() is False"])


# --------------------------------------------------------------------------- what "gpu" needs
def test_offline_without_weights_or_data_falls_back_fast(no_cuda, empty_caches, no_network, capsys):
    t0 = time.perf_counter()
    profile = P.use_profile("gpu", environ={"HF_HUB_OFFLINE": "1"})
    assert time.perf_counter() - t0 < 5
    assert profile.name == "cpu"
    out = capsys.readouterr().out
    assert_words(out, ["no CUDA GPU", "huggingface-cli download timm/vit_base_patch16_224.augreg_in21k",
                       "HF_HUB_OFFLINE=1", "VPT_VTAB_ROOT=/path/to/vtab-1k", "VPT_DATA_ROOT", "profile 'cpu'"])
    with pytest.raises(ConfigError) as e:
        P.use_profile("gpu", fallback=False, environ={"HF_HUB_OFFLINE": "1"}, verbose=False)
    assert_words(e.value, ["'gpu'", "huggingface-cli download"])


def test_gpu_profile_ready_with_cached_weights_and_vtab_folder(fake_cuda, empty_caches, no_network,
                                                               tmp_path, capsys):
    env = {"HF_HUB_OFFLINE": "1", "VPT_VTAB_ROOT": str(fake_vtab(tmp_path / "vtab"))}
    missing = P.check_gpu_profile(GPU, environ=env)
    assert len(missing) == 1 and "not cached" in missing[0]
    fake_hub_cache(empty_caches, "timm/vit_base_patch16_224.augreg_in21k")
    assert P.cached_weights(GPU.backbone).endswith("model.safetensors")
    assert P.check_gpu_profile(GPU, environ=env) == []
    assert P.use_profile(environ=env).name == "gpu"  # chosen from the (fake) device
    assert "profile 'gpu'" in capsys.readouterr().out
    assert P.check_gpu_profile(GPU, environ={"HF_HUB_OFFLINE": "1", "VPT_DATA_ROOT": str(tmp_path)}) == []


def test_the_papers_orig_weights_serve_when_only_they_are_cached(fake_cuda, empty_caches, no_network,
                                                                tmp_path, capsys):
    fake_hub_cache(empty_caches, "timm/vit_base_patch16_224.orig_in21k")
    env = {"HF_HUB_OFFLINE": "1", "VPT_DATA_ROOT": str(tmp_path)}
    profile = P.use_profile("gpu", environ=env)
    assert (profile.name, profile.backbone) == ("gpu", "vit_base_patch16_224.orig_in21k")
    assert "instead of 'vit_base_patch16_224.augreg_in21k'" in capsys.readouterr().out
    changed = GPU.replace(epochs=3)
    assert P.use_profile(changed, environ=env, verbose=False).epochs == 3


def test_vtab_root_problems_are_named(fake_cuda, empty_caches, tmp_path):
    fake_hub_cache(empty_caches, "timm/vit_base_patch16_224.augreg_in21k")
    root = fake_vtab(tmp_path / "vtab", tasks=("cifar",))
    missing = P.check_gpu_profile(GPU, environ={"VPT_VTAB_ROOT": str(root)})
    assert len(missing) == 1
    assert_words(missing[0], ["eurosat", "clevr_count", "validate_vtab_folder"])
    assert "cifar'" not in missing[0]
    missing = P.check_gpu_profile(GPU, environ={"VPT_VTAB_ROOT": str(tmp_path / "nope")})
    assert_words(missing[0], ["is not a folder", "nope"])


def test_network_probe_is_bounded_and_used_only_online(fake_cuda, empty_caches, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(P, "hub_reachable", lambda *a, **k: calls.append(1) or True)
    env = {"VPT_DATA_ROOT": str(tmp_path)}
    assert P.check_gpu_profile(GPU, environ=env) == []  # online: timm downloads on first use
    assert calls == [1]
    assert P.check_gpu_profile(GPU, environ={**env, "HF_HUB_OFFLINE": "1"}) != []
    assert calls == [1]
    assert P.check_gpu_profile(GPU, environ=env, probe_network=False) != []


def test_hub_reachable_never_hangs(monkeypatch):
    def slow(*a, **k):
        time.sleep(3)
        raise OSError("no route")
    monkeypatch.setattr(socket, "create_connection", slow)
    t0 = time.perf_counter()
    assert P.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - t0 < 1.5


def test_offline_hub_load_fails_fast(empty_caches):
    import huggingface_hub.constants as hf
    if not hf.HF_HUB_OFFLINE:
        pytest.skip("huggingface_hub was imported without HF_HUB_OFFLINE=1")
    t0 = time.perf_counter()
    with pytest.raises(MissingFileError) as e:
        vx.load_backbone("vit_tiny_patch16_224.augreg_in21k", img_size=32)
    assert time.perf_counter() - t0 < 10
    assert_words(e.value, ["HF_HUB_OFFLINE=1", "weights="])


# --------------------------------------------------------------------------- a local file for the hub
def test_local_weights_file_stands_in_for_the_hub(fake_cuda, empty_caches, no_network, tmp_path):
    from safetensors.torch import save_file
    import timm
    torch.manual_seed(0)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2)
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    profile = GPU.replace(backbone="vit_tiny_patch16_224", img_size=32, weights=str(path))
    assert P.check_gpu_profile(profile, environ={"HF_HUB_OFFLINE": "1", "VPT_DATA_ROOT": str(tmp_path)}) == []
    vit = profile.load_backbone(depth=2)
    assert torch.equal(vit.state_dict()["pos_embed"], src.state_dict()["pos_embed"])
    x = torch.randn(2, 3, 32, 32)
    with P.autocast_for("cpu", "bf16"):
        logits = vit(x)  # the head's matmul runs in bf16 (LayerNorm stays float32)
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 1000)
    moved = profile.replace(weights=str(tmp_path / "gone.safetensors"))
    assert_words(P.check_gpu_profile(moved, environ={"VPT_DATA_ROOT": str(tmp_path)})[0],
                 ["gone.safetensors", "does not exist"])


def test_cpu_profile_backbone_loads_offline():
    vit = P.PROFILES["cpu"].load_backbone()
    assert vit.vpt_name == "dinov2-s14-offline" and vit.patch_embed.img_size == (56, 56)
    assert vit.patch_embed.grid_size == (4, 4) and vit.embed_dim == 384 and len(vit.blocks) == 12
    assert P.PROFILES["fast"].load_backbone().vpt_name == "tiny-dino"


# --------------------------------------------------------------------------- device and AMP
def test_amp_selection_on_cpu(no_cuda, monkeypatch):
    from vpt_explore.training import recipe
    assert not P.amp_settings("cpu").enabled
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: False)
    s = P.amp_settings(P.PROFILES["cpu"])  # amp="auto" on a CPU without native bf16: fp32, with a note
    assert s.kwargs() == {"device_type": "cpu", "enabled": False} and "no native bf16" in s.note
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: True)
    assert P.amp_settings(P.PROFILES["cpu"]).dtype == "bfloat16"
    s = P.amp_settings("auto", "bf16")
    assert (s.device_type, s.dtype) == ("cpu", "bfloat16")
    assert s.kwargs()["dtype"] is torch.bfloat16
    a = torch.randn(4, 4)
    with P.autocast_for("cpu", None):
        assert (a @ a).dtype == torch.float32
    with P.autocast_for(P.PROFILES["cpu"].replace(amp="bf16")):
        assert (a @ a).dtype == torch.bfloat16


def test_amp_selection_for_gpu_profile(no_cuda, monkeypatch):
    with pytest.raises(ConfigError) as e:
        P.amp_settings(GPU)
    assert_words(e.value, ["device='cuda'", "no CUDA GPU", "'cpu'"])
    monkeypatch.setattr(P, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.amp_settings(GPU) == P.AmpSettings("cuda", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    s = P.amp_settings(GPU)
    assert s.dtype == "float16" and "GradScaler" in s.note


def test_amp_and_device_errors():
    with pytest.raises(ConfigError) as e:
        P.amp_settings("cpu", "bf8")
    assert_words(e.value, ["amp", "'bf8'", "'bf16'"])
    with pytest.raises(ConfigError) as e:
        P.amp_settings("gpu")
    assert_words(e.value, ["device", "'gpu'", "'cuda'"])
