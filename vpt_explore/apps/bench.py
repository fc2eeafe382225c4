"""Latency, throughput and peak memory of VPT variants side by side (paper App., Table 12, Fig. 18-19).

    python -m vpt_explore bench infer --model vit_small_patch16_224 --img-size 224 --batch 8
    python -m vpt_explore bench train --model vit_small_patch16_224 --img-size 224 --batch 8
    python -m vpt_explore bench infer --device cuda --amp bf16 --compile --batch 256

``infer`` compares the frozen backbone (p=0) with token VPT-shallow, token VPT-deep and the exact
VPT-prefix path (``vpt_explore.prefix``) for each prompt length p; ``train`` compares one training
step (forward, backward, optimizer step) of VPT-deep, full fine-tuning and linear probing.
VPT-deep trains as ``vx.train`` does, through the exact prefix path (``PromptedViT.forward_features``
in training mode); ``vpt-deep-token`` is the same model forced through the token path.

How things are measured:

- latency: the median over ``repeats`` rounds; each round runs every variant once, in a rotating
  order, so machine noise (other processes, clock changes) hits all variants alike. The ratio
  column is the median over rounds of (variant time / baseline time in the same round), which
  cancels slow drifts of the machine's speed better than a ratio of medians.
- on a busy CPU, ``--threads 1`` gives far steadier numbers: with more threads than free cores
  the OpenMP threads wait on each other and single calls can take 10x longer.
- peak memory: the variant's resident tensors (weights, prompts, cached K/V, optimizer state) plus
  the peak of the tensor memory allocated *during* one call. CUDA: ``torch.cuda.max_memory_allocated``
  above what was allocated before the call. CPU: the peak of the CPU allocator's "Total Allocated"
  counter recorded by ``torch.profiler`` (``profile_memory=True``) in a separate, untimed call.
- FLOPs are analytic (per image: 2 x weights of every Linear x tokens through it, plus 4 x n_q x n_k x
  width for attention, plus the patch projection); training counts 3x forward for full fine-tuning,
  2x for VPT (the frozen backbone needs input gradients only) and 1x for linear probing. The share
  of the GPU's dense peak (MFU) uses a small table of known GPUs; unknown devices give ``None``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError, bad_choice
from ..model.prompted import PromptedViT
from ..training.recipe import autocast

NUM_CLASSES = 10
QUICK = dict(model="quick", img_size=32, batch=2, repeats=2)
FULL = dict(model="vit_small_patch16_224", img_size=224, batch=8, repeats=5)
QUICK_VIT = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2)
# dense bf16 (T4: fp16) tensor-core peak in TFLOPS: words that must all appear in the GPU's name
GPU_PEAK_TFLOPS = ((("H100", "PCIE"), 756.0), (("H100",), 989.0), (("H200",), 989.0),
                   (("A100",), 312.0), (("L4",), 121.0), (("T4",), 65.0))
TARGET_PREFIX, TARGET_TRAIN = 1.10, 0.75


# ----------------------------------------------------------------- machine, models, FLOPs
def machine_info(device: str) -> Dict[str, object]:
    """CPU model, threads, library versions and the accelerator's name."""
    import timm
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "device": device, "device_name": "cpu"}
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["peak_tflops_dense"] = gpu_peak_tflops(info["device_name"])
    return info


def gpu_peak_tflops(name: str) -> Optional[float]:
    """Dense bf16 peak (T4: fp16) of a known GPU, by name; None when unknown."""
    words = set(re.split(r"[\s\-_/]+", name.upper()))       # "NVIDIA A100-SXM4-80GB" -> {.., "A100", ..}
    return next((tf for keys, tf in GPU_PEAK_TFLOPS if words.issuperset(keys)), None)


def bench_backbone(name: str, img_size: int) -> nn.Module:
    """A ViT with random or shipped weights (never downloads): ``quick``, ``tiny`` or a timm name."""
    import timm
    if name == "quick":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=NUM_CLASSES,
                                 **QUICK_VIT).eval()
    if name == "tiny":
        from ..backbones.load import load_backbone
        try:
            return load_backbone("tiny").eval()
        except Exception:  # weights not built yet: the same architecture, random init
            return load_backbone("tiny", pretrained=False).eval()
    return timm.create_model(name, pretrained=False, img_size=img_size, num_classes=NUM_CLASSES).eval()


def forward_flops(vit: nn.Module, p: int = 0, variant: str = "backbone") -> float:
    """Analytic forward FLOPs per image of ``variant`` with ``p`` prompts (multiply-add = 2)."""
    n = vit.patch_embed.num_patches + vit.num_prefix_tokens       # R + m image tokens
    proj = vit.patch_embed.proj
    total = 2.0 * proj.weight.numel() * vit.patch_embed.num_patches
    tokens = p if variant in ("vpt-shallow", "vpt-deep") else 0   # prompts as tokens in every block
    keys = p if variant.startswith("prefix-deep") else 0             # prompts as cached K/V rows only
    for i, blk in enumerate(vit.blocks):
        width = blk.attn.num_heads * blk.attn.head_dim
        linear = sum(m.weight.numel() for m in blk.modules() if isinstance(m, nn.Linear))
        n_q, n_k = n + tokens, n + tokens + keys
        if variant == "prefix-deep-cls" and i == len(vit.blocks) - 1:  # last block: [CLS] asks alone
            qkv = blk.attn.qkv.weight.numel()
            total += 2.0 * qkv * n_q + 2.0 * (linear - qkv) + 4.0 * n_k * width
            continue
        total += 2.0 * linear * n_q + 4.0 * n_q * n_k * width
    return total


# ----------------------------------------------------------------- measuring
@contextlib.contextmanager
def _quiet_stderr():
    """Silence fd 2 (the profiler's C++ start/stop lines) for the duration of the block."""
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def _threads(n: Optional[int]):
    """Run with ``n`` intra-op CPU threads (None: leave torch's setting), restoring it after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def peak_call_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak tensor memory allocated during one call of ``fn`` (bytes above what existed before)."""
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile
    with tempfile.TemporaryDirectory() as tmp, _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    totals = [e["args"].get("Total Allocated", 0) for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    return max([0] + totals)


def resident_bytes(*objs) -> int:
    """Bytes of the distinct tensors held by modules (params, buffers) and optimizers (state)."""
    seen, total = set(), 0
    for obj in objs:
        if isinstance(obj, nn.Module):
            tensors = list(obj.parameters()) + list(obj.buffers())
        else:
            tensors = [t for st in obj.state.values() for t in st.values() if torch.is_tensor(t)]
        for t in tensors:
            key = (t.device, t.data_ptr())
            if key not in seen and t.numel():
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def interleaved_times_ms(fns: Sequence[Callable[[], object]], repeats: int, device: str,
                         warmup: int = 1) -> List[List[float]]:
    """Wall times (ms) of each fn per round; every round runs all fns once, in a rotating order."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    times: List[List[float]] = [[] for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)):
            j = (k + r) % len(fns)
            _sync(device)
            t0 = time.perf_counter()
            fns[j]()
            _sync(device)
            times[j].append(1e3 * (time.perf_counter() - t0))
    return times


def _summarise(times: List[List[float]]) -> List[tuple]:
    """(median ms, median over rounds of time / first fn's time in the same round) for each fn."""
    return [(statistics.median(t), statistics.median(a / b for a, b in zip(t, times[0])))
            for t in times]


def _peak_mems(fns: Sequence[Callable[[], object]], holders: Sequence, device: str,
               compile: bool) -> List[float]:
    """Peak memory (MB) of each fn: resident tensors of its holders + peak during one call.

    The call also serves as the warm-up on the CPU; compiled functions are warmed up first, so
    compilation's own buffers are not counted.
    """
    out = []
    for fn, holder in zip(fns, holders):
        if compile:
            fn()
            fn()
        held = resident_bytes(*holder) if isinstance(holder, tuple) else resident_bytes(holder)
        out.append((held + peak_call_bytes(fn, device)) / 2**20)
    return out


def _setup(model, img_size, batch, repeats, device, amp, quick):
    base = QUICK if quick else FULL
    model = model or base["model"]
    img_size, batch = img_size or base["img_size"], batch or base["batch"]
    repeats = repeats or base["repeats"]
    if amp not in (None, "bf16", "fp16"):
        raise bad_choice("amp", amp, (None, "bf16", "fp16"))
    if device != "cpu" and not device.startswith("cuda"):
        raise bad_choice("device", device, ("cpu", "cuda", "cuda:N"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA GPU is available; use --device cpu")
    vit = bench_backbone(model, img_size).to(device)
    size = vit.patch_embed.img_size
    images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    return model, vit, images, repeats


def _mfu(flops_per_image: float, images_per_s: float, info: dict) -> Optional[float]:
    peak = info.get("peak_tflops_dense")
    return None if not peak else flops_per_image * images_per_s / (peak * 1e12)


# ----------------------------------------------------------------- infer
def run_infer(model: Optional[str] = None, img_size: Optional[int] = None, batch: Optional[int] = None,
              repeats: Optional[int] = None, ps: Sequence[int] = (0, 1, 10, 50, 100, 200),
              device: str = "cpu", amp: Optional[str] = None, compile: bool = False,
              quick: bool = False, threads: Optional[int] = None) -> Dict[str, object]:
    """Inference latency and peak memory vs prompt length p (Fig. 18-19); returns the JSON dict.

    Args:
        model: ``"quick"`` (random 32 px, 4 blocks), ``"tiny"`` (shipped) or a timm name (random
            weights; default ``vit_small_patch16_224``, or ``quick`` with ``quick=True``).
        img_size, batch, repeats: input size, batch size, interleaved timing rounds.
        ps: prompt lengths; 0 stands for the frozen backbone, which is always measured.
        device, amp, compile: ``"cpu"``/``"cuda"``, ``None``/``"bf16"``/``"fp16"``, ``torch.compile``.
        quick: small defaults for tests and CI smoke runs.
        threads: CPU intra-op threads while measuring (None: torch's default).

    Returns:
        ``{"machine": {...}, "infer": [row, ...], "train": [], "targets": [...]}``; each row has
        ``variant, p, latency_ms, peak_mem_mb, ratio, mem_ratio, images_per_s, mfu``.
    """
    with _threads(threads):
        return _run_infer(model, img_size, batch, repeats, ps, device, amp, compile, quick)


def _run_infer(model, img_size, batch, repeats, ps, device, amp, compile, quick) -> Dict[str, object]:
    if quick and tuple(ps) == (0, 1, 10, 50, 100, 200):
        ps = (0, 1, 10)
    name, vit, images, repeats = _setup(model, img_size, batch, repeats, device, amp, quick)
    variants = [("backbone", 0, vit)]
    for p in sorted({int(p) for p in ps if p > 0}):
        kw = dict(num_classes=NUM_CLASSES, seed=0)
        shallow = PromptedViT(vit, PromptConfig(length=p, layers="shallow"), **kw).to(device).eval()
        deep = PromptedViT(vit, PromptConfig(length=p, layers="deep"), **kw).to(device).eval()
        variants += [("vpt-shallow", p, shallow), ("vpt-deep", p, deep), ("prefix-deep", p, deep.as_prefix())]

    def caller(module):
        run = torch.compile(module) if compile else module

        def call():
            with torch.inference_mode(), autocast(device, amp):
                return run(images)
        return call

    calls = [caller(m) for _, _, m in variants]
    mems = _peak_mems(calls, [m for _, _, m in variants], device, compile)
    times = interleaved_times_ms(calls, repeats, device, warmup=0 if device == "cpu" else 2)
    info = machine_info(device)
    rows = []
    for (var, p, module), mem, (ms, ratio) in zip(variants, mems, _summarise(times)):
        ips = images.shape[0] / (ms / 1e3)
        rows.append({"variant": var, "p": p, "latency_ms": ms, "peak_mem_mb": mem, "ratio": ratio,
                     "images_per_s": ips, "mfu": _mfu(forward_flops(vit, p, var), ips, info)})
    for row in rows:
        row["mem_ratio"] = row["peak_mem_mb"] / rows[0]["peak_mem_mb"]
    targets = []
    for row in rows:
        if row["variant"] == "prefix-deep" and row["p"] == 50:
            targets.append({"name": "prefix-deep p=50 latency vs frozen backbone", "value": row["ratio"],
                            "limit": TARGET_PREFIX, "passed": row["ratio"] <= TARGET_PREFIX})
    settings = dict(model=name, img_size=images.shape[-1], batch=images.shape[0], repeats=repeats,
                    amp=amp, compile=compile)
    return {"machine": {**info, **settings}, "infer": rows, "train": [], "targets": targets}


# ----------------------------------------------------------------- train
def _train_step(forward: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer,
                images: torch.Tensor, labels: torch.Tensor, device: str, amp: Optional[str]):
    """One optimisation step: zero grads, forward (autocast), cross-entropy, backward, step."""
    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = F.cross_entropy(forward(images).float(), labels)
        loss.backward()
        opt.step()
    return step


def run_train(model: Optional[str] = None, img_size: Optional[int] = None, batch: Optional[int] = None,
              repeats: Optional[int] = None, p: int = 10, device: str = "cpu", amp: Optional[str] = None,
              compile: bool = False, quick: bool = False, threads: Optional[int] = None) -> Dict[str, object]:
    """Step time and peak memory of VPT-deep vs full fine-tuning vs linear at equal batch.

    Full fine-tuning trains every weight (AdamW); VPT-deep trains p prompts per block and the head
    (SGD) over a backbone frozen with ``requires_grad_(False)``, through the prefix path
    (``vpt-deep``) and the token path (``vpt-deep-token``); linear trains the head (SGD) on features
    computed under ``no_grad``. Arguments as in ``run_infer``; ``p`` is VPT-deep's length.

    Returns:
        ``{"machine": {...}, "infer": [], "train": [row, ...], "targets": [...]}``; each row has
        ``variant, p, step_ms, peak_mem_mb, ratio, mem_ratio, images_per_s, mfu``.
    """
    with _threads(threads):
        return _run_train(model, img_size, batch, repeats, p, device, amp, compile, quick)


def _run_train(model, img_size, batch, repeats, p, device, amp, compile, quick) -> Dict[str, object]:
    name, vit, images, repeats = _setup(model, img_size, batch, repeats, device, amp, quick)
    labels = torch.arange(images.shape[0], device=device) % NUM_CLASSES
    maybe = torch.compile if compile else (lambda m: m)

    full = copy.deepcopy(vit).requires_grad_(True).train()
    vpt = PromptedViT(vit, PromptConfig(length=p, layers="deep"), NUM_CLASSES, seed=0).to(device).train()
    # same prompts and head on the same (shared, not copied) backbone, trained through forward_tokens
    vpt_token = copy.deepcopy(vpt, memo={id(vit): vit})
    vpt_token.train_path = "token"
    linear = PromptedViT(vit, PromptConfig(length=0), NUM_CLASSES).to(device).train()
    feats = maybe(linear.forward_features)

    def linear_forward(x):
        with torch.no_grad():
            f = feats(x)
        return linear.forward_head(f)

    with torch.no_grad():  # what vx.train caches once for head-only methods
        cached = feats(images).detach()                                     # (B, D)
    cached_head = copy.deepcopy(linear.head)

    specs = [  # variant, module holding its tensors, forward, optimizer, FLOPs / forward FLOPs, FLOPs kind
        ("full", full, maybe(full), torch.optim.AdamW, 3.0, "backbone"),
        ("vpt-deep", vpt, maybe(vpt), torch.optim.SGD, 2.0, "prefix-deep-cls"),
        ("vpt-deep-token", vpt_token, maybe(vpt_token), torch.optim.SGD, 2.0, "vpt-deep"),
        ("linear", linear, linear_forward, torch.optim.SGD, 1.0, "backbone"),
        ("linear-cached", cached_head, lambda x: cached_head(cached), torch.optim.SGD, 0.0, "backbone"),
    ]
    steps, opts = [], []
    for var, module, fwd, opt_cls, _, _ in specs:
        params = [q for q in module.parameters() if q.requires_grad]
        opt = opt_cls(params, lr=1e-4, momentum=0.9) if opt_cls is torch.optim.SGD else opt_cls(params, lr=1e-4)
        opts.append(opt)
        steps.append(_train_step(fwd, opt, images, labels, device, amp))
    for step in steps:  # creates the optimizer state, so the memory pass below counts it as resident
        step()
    mems = _peak_mems(steps, [(s[1], o) for s, o in zip(specs, opts)], device, compile)
    times = interleaved_times_ms(steps, repeats, device, warmup=0 if device == "cpu" else 2)
    info = machine_info(device)
    rows = []
    for (var, module, _, _, factor, kind), mem, (ms, ratio) in zip(specs, mems, _summarise(times)):
        ips = images.shape[0] / (ms / 1e3)
        p_row = p if var.startswith("vpt") else 0
        flops = factor * forward_flops(vit, p_row, kind)
        rows.append({"variant": var, "p": p_row, "step_ms": ms, "peak_mem_mb": mem,
                     "ratio": ratio, "images_per_s": ips, "mfu": _mfu(flops, ips, info)})
    for row in rows:
        row["mem_ratio"] = row["peak_mem_mb"] / rows[0]["peak_mem_mb"]
    by = {r["variant"]: r for r in rows}
    ratio = by["vpt-deep"]["ratio"]
    speedup = by["linear"]["step_ms"] / by["linear-cached"]["step_ms"]
    targets = [{"name": f"vpt-deep p={p} step time vs full fine-tuning", "value": ratio,
                "limit": TARGET_TRAIN, "passed": ratio <= TARGET_TRAIN},
               {"name": "linear probe epoch on cached features vs re-running the backbone (speed-up)",
                "value": speedup, "limit": 10.0, "passed": speedup >= 10.0, "at_least": True}]
    settings = dict(model=name, img_size=images.shape[-1], batch=images.shape[0], repeats=repeats,
                    amp=amp, compile=compile)
    return {"machine": {**info, **settings}, "infer": [], "train": rows, "targets": targets}


# ----------------------------------------------------------------- printing and CLI
def format_result(result: Dict[str, object]) -> str:
    """The machine line, a table per mode and PASS/FAIL lines for the targets."""
    m = result["machine"]
    lines = [f"machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads), "
             f"device {m['device_name']}, torch {m['torch']}, timm {m['timm']}, python {m['python']}",
             f"model {m['model']} {m['img_size']}px batch {m['batch']}, median of {m['repeats']} "
             f"interleaved repeats, amp={m['amp']}, compile={m['compile']}"]
    for mode, key in (("infer", "latency_ms"), ("train", "step_ms")):
        rows = result[mode]
        if not rows:
            continue
        lines.append(f"| variant | p | {key.replace('_', ' ')} | x {rows[0]['variant']} | peak MB | "
                     f"x mem | images/s | MFU |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            lines.append(f"| {r['variant']} | {r['p']} | {r[key]:.1f} | {r['ratio']:.2f} | "
                         f"{r['peak_mem_mb']:.0f} | {r['mem_ratio']:.2f} | {r['images_per_s']:.1f} | {mfu} |")
    for t in result["targets"]:
        lines.append(f"{'PASS' if t['passed'] else 'FAIL'}: {t['name']} = {t['value']:.3f}x "
                     f"(target {'>=' if t.get('at_least') else '<='} {t['limit']:.2f}x)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vpt_explore bench", description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("infer", "train"))
    ap.add_argument("--model", default=None, help="timm name, 'tiny' (shipped) or 'quick' (random, 32 px)")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--p", type=int, nargs="+", default=None,
                    help="prompt lengths (infer; default 0 1 10 50 100 200), train uses the first > 0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=("bf16", "fp16"), default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for tests and CI smoke runs")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m vpt_explore bench {infer,train} ...``; returns 0."""
    args = build_parser().parse_args(argv)
    common = dict(model=args.model, img_size=args.img_size, batch=args.batch, repeats=args.repeats,
                  device=args.device, amp=args.amp, compile=args.compile, quick=args.quick,
                  threads=args.threads)
    if args.mode == "infer":
        result = run_infer(ps=args.p if args.p is not None else (0, 1, 10, 50, 100, 200), **common)
    else:
        p = next((q for q in (args.p or []) if q > 0), 10)
        result = run_train(p=p, **common)
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
