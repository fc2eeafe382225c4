"""Benchmark smoke tests: the CLI writes sane JSON (speed itself is never asserted)."""
import json
import math

import pytest
import torch

from vpt_explore.apps import bench
from vpt_explore.errors import ConfigError


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_infer_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "infer.json"
    assert bench.main(["infer", "--quick", "--repeats", "1", "--threads", "1", "--p", "0", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| prefix-deep | 3 |" in printed and "machine:" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "infer", "train", "targets"}
    assert data["machine"]["torch"] and data["machine"]["device"] == "cpu"
    assert data["machine"]["torch_threads"] == 1
    rows = data["infer"]
    assert [(r["variant"], r["p"]) for r in rows] == [
        ("backbone", 0), ("vpt-shallow", 3), ("vpt-deep", 3), ("prefix-deep", 3)]
    for r in rows:
        assert _positive(r["latency_ms"]) and _positive(r["peak_mem_mb"]) and _positive(r["ratio"])
        assert r["mfu"] is None                                   # CPU: no known peak
    assert rows[0]["ratio"] == 1.0
    assert data["targets"] == []                                  # the p=50 target needs p=50


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    assert bench.main(["train", "--quick", "--repeats", "1", "--threads", "1", "--p", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["train"]] == ["full", "vpt-deep", "vpt-deep-token", "linear", "linear-cached"]
    for r in data["train"]:
        assert _positive(r["step_ms"]) and _positive(r["peak_mem_mb"])
    assert data["train"][1]["p"] == 2
    target, cached = data["targets"]
    assert target["limit"] == 0.75 and isinstance(target["passed"], bool)
    assert cached["limit"] == 10.0 and cached["value"] == data["train"][3]["step_ms"] / data["train"][4]["step_ms"]
    assert target["value"] == data["train"][1]["ratio"]


def test_flops_and_gpu_table():
    vit = bench.bench_backbone("quick", 32)
    base = bench.forward_flops(vit)
    prefix = bench.forward_flops(vit, 8, "prefix-deep")
    deep = bench.forward_flops(vit, 8, "vpt-deep")
    assert base < prefix < deep == bench.forward_flops(vit, 8, "vpt-shallow")
    # training's [CLS]-only last block: the other n-1 tokens skip proj, MLP and their attention rows
    last, n = vit.blocks[-1], 1 + vit.patch_embed.num_patches
    rest = sum(m.weight.numel() for m in last.modules() if isinstance(m, torch.nn.Linear)) \
        - last.attn.qkv.weight.numel()
    saved = (n - 1) * (2.0 * rest + 4.0 * (n + 8) * last.attn.num_heads * last.attn.head_dim)
    assert bench.forward_flops(vit, 8, "prefix-deep-cls") == pytest.approx(prefix - saved)
    assert bench.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.gpu_peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert bench.gpu_peak_tflops("Tesla T4") == 65.0
    assert bench.gpu_peak_tflops("NVIDIA L4") == 121.0
    assert bench.gpu_peak_tflops("NVIDIA L40S") is None          # not the L4
    assert bench.gpu_peak_tflops("Some New GPU") is None


def test_bench_refuses_missing_cuda(monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="cuda"):
        bench.run_infer(quick=True, device="cuda", ps=(0,))


def test_no_name_clashes_with_the_public_api():
    """bench and the tiny pretraining script do not define names that mean something else in vx."""
    from vpt_explore.backbones import pretrain_tiny
    assert not hasattr(bench, "load_model") and hasattr(bench, "bench_backbone")
    assert not hasattr(pretrain_tiny, "evaluate") and hasattr(pretrain_tiny, "heldout_accuracy")
