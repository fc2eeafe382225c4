"""Benchmark smoke tests: the CLI writes sane JSON (speed itself is never asserted)."""
import json
import math
import re
import statistics

import pytest
import torch

from vpt_explore.apps import bench
from vpt_explore.errors import ConfigError

from tests.conftest import assert_words


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


# ----------------------------------------------------------------- train rows (--rows, --cpu-profile)
NO_COMPILE_ROWS = [r for r in bench.CPU_PROFILE_ROWS if "+compile" not in r]


def test_row_grammar_and_baselines():
    spec = bench.parse_row("vpt-deep+bf16+compile")
    assert (spec.base, spec.amp, spec.compile, spec.cache) == ("vpt-deep", "bf16", True, False)
    assert spec.mods == ("bf16", "compile")
    assert bench.parse_row("vpt-last-half+fp32+compile+cache").mods == ("fp32", "compile", "cache")
    expected = {
        "full": None, "vpt-deep": "full", "linear": "full", "linear-cached": "linear",
        "vpt-deep-token": "vpt-deep",                           # the path, at the same settings
        "vpt-deep-token+bf16": "vpt-deep+bf16",
        "frozen-embed": "vpt-deep", "frozen-embed+bf16": "vpt-deep+bf16",   # its share of that step
        "vpt-deep+bf16": "vpt-deep", "full+bf16": "full",       # a modifier against the row without it
        "vpt-deep+bf16+compile": "vpt-deep+bf16", "vpt-deep+compile": "vpt-deep",
        "vpt-last-half": "vpt-deep", "vpt-last-half+cache": "vpt-last-half",
        "vpt-last-half+bf16+cache": "vpt-last-half+bf16",
    }
    assert {name: bench.row_baseline(name) for name in expected} == expected
    # missing baselines are measured too, each before the row that needs it
    assert bench.expand_rows(["vpt-deep+bf16+compile", "vpt-deep"]) == [
        "full", "vpt-deep", "vpt-deep+bf16", "vpt-deep+bf16+compile"]
    assert bench.expand_rows(bench.DEFAULT_ROWS) == list(bench.DEFAULT_ROWS)
    assert bench.expand_rows(bench.CPU_PROFILE_ROWS) == list(bench.CPU_PROFILE_ROWS)


@pytest.mark.parametrize("rows, words", [
    (["vpt-dep"], ["rows: base='vpt-dep'", "'vpt-deep'"]),
    (["vpt-deep+compile+bf16"], ["'vpt-deep+compile+bf16'", "+fp32/+bf16/+fp16", "in that order"]),
    (["vpt-deep+bf16+fp16"], ["'vpt-deep+bf16+fp16'", "in that order"]),
    (["vpt-deep+int8"], ["'+int8'", "+compile"]),
    (["vpt-deep+cache"], ["+cache applies to 'vpt-last-half' only", "frozen-embed"]),
    (["linear+compile"], ["+compile applies to full, vpt-deep, vpt-deep-token, vpt-last-half", "'linear'"]),
    (["frozen-embed+compile"], ["+compile applies to", "'frozen-embed'"]),
    ([], ["rows=[]", "non-empty"]),
    ("vpt-deep", ["rows='vpt-deep'", "list"]),
])
def test_bad_rows_are_refused_by_name(rows, words):
    with pytest.raises(ConfigError) as e:
        bench.run_train(quick=True, rows=rows)
    assert_words(e.value, words)


def test_compile_flag_and_compile_rows_do_not_mix():
    with pytest.raises(ConfigError) as e:
        bench.run_train(quick=True, compile=True, rows=["vpt-deep+compile"])
    assert_words(e.value, ["compile=True", "--compile", "['vpt-deep+compile']"])


@pytest.mark.parametrize("threads", [0, -1, "all", 1.5, True])
def test_bad_threads_are_refused(threads):
    with pytest.raises(ConfigError, match=re.escape(f"threads={threads!r}")):
        bench.run_train(quick=True, threads=threads, rows=["full"])


def test_rows_quick_real_run(tmp_path, capsys):
    """Every non-compiled --cpu-profile row runs for real on the quick model; each is a new variant."""
    out = tmp_path / "rows.json"
    assert bench.main(["train", "--quick", "--repeats", "1", "--threads", "1", "--p", "3", "--rows",
                       *NO_COMPILE_ROWS, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {r["variant"]: r for r in data["train"]}
    assert list(rows) == NO_COMPILE_ROWS and data["machine"]["rows"] == NO_COMPILE_ROWS
    assert data["machine"]["depth"] == 4 and data["machine"]["p"] == 3
    assert isinstance(data["machine"]["cpu_native_bf16"], bool)
    for name, r in rows.items():
        assert _positive(r["step_ms"]) and _positive(r["peak_mem_mb"]) and _positive(r["vs_baseline"])
        assert r["baseline"] == bench.row_baseline(name) and r["compiled"] is False and r["compile_s"] is None
        assert r["amp"] == ("bf16" if "+bf16" in name else None)
        assert r["p"] == (3 if name.startswith("vpt") else 0)
    assert rows["full"]["vs_baseline"] == 1.0 and rows["full"]["ratio"] == 1.0
    assert rows["vpt-deep"]["vs_baseline"] == rows["vpt-deep"]["ratio"]      # full is the first row
    # the side-by-side table names each row's baseline; bf16 support is stated
    assert "| vpt-last-half+cache | vpt-last-half |" in printed
    assert "| vpt-deep-token+bf16 | vpt-deep+bf16 |" in printed and "token path / prefix path" in printed
    assert "share of the step spent in the frozen patch + position embedding" in printed
    assert "blocks 0-1 read from the cache" in printed and "prompts in blocks 2-3 only" in printed
    assert "bf16 on this CPU:" in printed
    assert [t["name"].split()[0] for t in data["targets"]] == ["vpt-deep", "linear"]


def test_default_train_output_is_unchanged(capsys):
    bench.main(["train", "--quick", "--repeats", "1", "--threads", "1"])
    printed = capsys.readouterr().out
    assert "side by side" not in printed and "bf16 on this CPU" not in printed
    assert printed.count("\n| ") == 6                              # header + 5 rows


def _fake_clock(monkeypatch, step_ms, first_ms=1000.0):
    """Deterministic timings: row j takes step_ms[j] in round r times (1 + r/10); first steps first_ms."""
    def fake_times(fns, repeats, device, warmup=1):
        return [[step_ms[j] * (1 + r / 10) if j % 2 else step_ms[j] for r in range(repeats)]
                for j in range(len(fns))]
    monkeypatch.setattr(bench, "interleaved_times_ms", fake_times)
    monkeypatch.setattr(bench, "_timed_ms", lambda fn, device: (fn(), first_ms)[1])


def test_ratios_use_each_rows_own_baseline(monkeypatch):
    rows = ["full", "vpt-deep", "vpt-deep+bf16", "vpt-deep-token+bf16", "frozen-embed", "vpt-last-half",
            "vpt-last-half+cache"]
    step_ms = [400.0, 200.0, 100.0, 150.0, 2.0, 120.0, 60.0]
    _fake_clock(monkeypatch, step_ms)
    res = bench.run_train(quick=True, repeats=3, p=2, rows=rows)
    by = {r["variant"]: r for r in res["train"]}
    grow = [1.0, 1.1, 1.2]                                          # odd rows slow down round by round

    def ratio(a, b):
        ta = [step_ms[a] * (g if a % 2 else 1.0) for g in grow]
        tb = [step_ms[b] * (g if b % 2 else 1.0) for g in grow]
        return statistics.median(x / y for x, y in zip(ta, tb))
    assert by["vpt-deep"]["vs_baseline"] == pytest.approx(ratio(1, 0))
    assert by["vpt-deep+bf16"]["vs_baseline"] == pytest.approx(ratio(2, 1))
    assert by["vpt-deep-token+bf16"]["vs_baseline"] == pytest.approx(ratio(3, 2))
    assert by["frozen-embed"]["vs_baseline"] == pytest.approx(ratio(4, 1))
    assert by["vpt-last-half"]["vs_baseline"] == pytest.approx(ratio(5, 1))
    assert by["vpt-last-half+cache"]["vs_baseline"] == pytest.approx(ratio(6, 5))
    for j, name in enumerate(rows):                                 # the x-first-row column as before
        assert by[name]["ratio"] == pytest.approx(ratio(j, 0))
    assert res["targets"][0]["value"] == by["vpt-deep"]["vs_baseline"]


def test_compile_rows_compile_only_themselves_and_report_compile_time(monkeypatch, capsys):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module
    monkeypatch.setattr(bench.torch, "compile", fake_compile)
    _fake_clock(monkeypatch, [400.0, 200.0, 100.0, 150.0, 200.0], first_ms=5000.0)
    res = bench.run_train(quick=True, repeats=3, p=2,
                          rows=["vpt-deep+compile", "vpt-deep+bf16", "vpt-deep+bf16+compile"])
    by = {r["variant"]: r for r in res["train"]}
    assert list(by) == ["full", "vpt-deep", "vpt-deep+compile", "vpt-deep+bf16", "vpt-deep+bf16+compile"]
    assert len(compiled) == 2 and all(isinstance(m, bench.PromptedViT) for m in compiled)
    assert compiled[0]._prefix_exact is True and compiled[0].uses_prefix_path()   # checked before compiling
    assert [r["compiled"] for r in res["train"]] == [False, False, True, False, True]
    # compile time: the first two steps (5 s each) minus two steady steps
    assert by["vpt-deep+compile"]["compile_s"] == pytest.approx((2 * 5000 - 2 * 100.0) / 1e3)
    assert by["vpt-deep+bf16+compile"]["compile_s"] == pytest.approx((2 * 5000 - 2 * 200.0) / 1e3)
    assert by["vpt-deep+compile"]["baseline"] == "vpt-deep" and by["vpt-deep+compile"]["amp"] is None
    assert by["vpt-deep+bf16+compile"]["baseline"] == "vpt-deep+bf16"
    assert by["vpt-deep+bf16+compile"]["amp"] == "bf16"
    printed = bench.format_result(res)
    # 100 ms against 200 ms x (1, 1.1, 1.2): median ratio 1/2.2, so 120 ms saved a step: 9.8 s / 0.12 s
    assert "| vpt-deep+compile | vpt-deep | 0.45 | compiled / eager; compile 9.8 s, pays back after 82 steps |" \
        in printed
    # 200 ms against 150 ms x (1, 1.1, 1.2): slower, so the compile time is never won back
    assert "| vpt-deep+bf16+compile | vpt-deep+bf16 | 1.21 | compiled / eager; compile 9.6 s, never pays " \
           "back (not faster) |" in printed


def test_cpu_profile_preset(monkeypatch):
    from vpt_explore.training.profiles import PROFILES
    preset = bench.cpu_profile_settings()
    assert preset == dict(model="dinov2-s14-offline", img_size=56, batch=PROFILES["cpu"].batch_size,
                          p=PROFILES["cpu"].prompt_length, threads="auto", rows=bench.CPU_PROFILE_ROWS)
    seen = {}

    def fake_run(**kw):
        seen.clear()
        seen.update(kw)
        return {"machine": {}, "infer": [], "train": [], "targets": []}
    monkeypatch.setattr(bench, "run_train", fake_run)
    monkeypatch.setattr(bench, "format_result", lambda result: "")
    bench.main(["train", "--cpu-profile"])
    assert (seen["model"], seen["img_size"], seen["batch"], seen["p"], seen["threads"]) == \
        ("dinov2-s14-offline", 56, preset["batch"], preset["p"], "auto")
    assert seen["rows"] == bench.CPU_PROFILE_ROWS and seen["quick"] is False
    bench.main(["train", "--cpu-profile", "--batch", "8", "--threads", "2", "--p", "5", "--rows", "vpt-deep"])
    assert (seen["batch"], seen["threads"], seen["p"], seen["rows"]) == (8, 2, 5, ["vpt-deep"])  # flags win
    bench.main(["train", "--cpu-profile", "--quick"])             # quick sizes, the preset's rows
    assert seen["model"] is None and seen["batch"] is None and seen["threads"] is None
    assert seen["rows"] == bench.CPU_PROFILE_ROWS and seen["quick"] is True
    bench.main(["train"])
    assert seen["rows"] == bench.DEFAULT_ROWS and seen["p"] == 10


def test_cli_refuses_rows_for_infer_and_bad_threads(capsys):
    with pytest.raises(ConfigError) as e:
        bench.main(["infer", "--quick", "--rows", "vpt-deep"])
    assert_words(e.value, ["--rows", "'bench train'", "mode='infer'"])
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            bench.main(["train", "--threads", bad])
        assert f"invalid value '{bad}': an integer >= 1 or 'auto'" in capsys.readouterr().err


def test_backbones_and_flops_of_the_new_rows(monkeypatch):
    calls = []

    def fake_load(name, **kw):
        calls.append((name, kw))
        return bench.bench_backbone("quick", 32)
    import vpt_explore.backbones.load as load
    monkeypatch.setattr(load, "load_backbone", fake_load)
    bench.bench_backbone("dinov2-s14-offline", 56)
    bench.bench_backbone("tiny-dino", 224)                         # the tiny ones are 32 px only
    assert calls == [("dinov2-s14-offline", {"img_size": 56}), ("tiny-dino", {})]
    vit = bench.bench_backbone("quick", 32)
    whole = bench.forward_flops(vit, 5, "prefix-deep-cls")
    parts = bench.forward_flops(vit, 5, "prefix-deep-cls", blocks=range(2)) + \
        bench.forward_flops(vit, 5, "prefix-deep-cls", blocks=range(2, 4), embed=False)
    assert parts == pytest.approx(whole)
    proj = vit.patch_embed.proj.weight.numel() * vit.patch_embed.num_patches
    assert bench.forward_flops(vit, blocks=()) == 2.0 * proj       # frozen-embed: the projection only
