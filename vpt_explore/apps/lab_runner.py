"""The training lab's runs, without widgets: load (cached), build, train, evaluate, one row.

``LabRunner`` owns the caches (backbones, datasets), the Stop event handed to ``vx.train`` and the
background thread; it reports through the callables it is given. ``TrainingLab`` builds the
configs from its controls and shows what the runner reports.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..backbones.load import list_backbones, load_backbone
from ..data.registry import load_task
from ..errors import ConfigError
from ..methods.factory import make_model
from ..methods.registry import inference_model, methods_for, parse_method
from ..training.batches import evaluate
from ..training.loop import train
from ..training.profiles import cached_weights, hub_reachable
from .lab_results import result_row

LAB_METHODS = methods_for("vit")  # every lab backbone is a ViT (conv-pad is for ConvNets)
PROMPT_METHODS = tuple(m for m in LAB_METHODS if parse_method(m)[0].has_prompts)
# prompts on the input image (Bahng et al.'s pad / patch prompters): only their length (pixels) is set
PIXEL_METHODS = tuple(m for m in PROMPT_METHODS if parse_method(m)[0].input_prompt)


def available_backbones(environ: Mapping[str, str] = os.environ, probe_network: bool = True
                        ) -> List[Tuple[str, str]]:
    """The lab's backbone choices as (label, name): the offline ones, then the hub ones that can load.

    A hub backbone is listed when its weights are in the local cache, or when ``huggingface.co``
    answers within a second (never probed with ``HF_HUB_OFFLINE=1``); nothing is downloaded here,
    and timm is not imported (the Voila page renders without it).
    """
    rows, online = [], None
    for info in list_backbones():
        if info.offline:
            rows.append((f"{info.name} (offline)", info.name))
        elif cached_weights(info.name, hub_id=f"timm/{info.timm_name}"):  # timm's hub names; no timm import
            rows.append((f"{info.name} (hub, cached)", info.name))
        else:
            if online is None:
                online = probe_network and environ.get("HF_HUB_OFFLINE") != "1" and hub_reachable(1.0)
            if online:
                rows.append((f"{info.name} (hub, downloads on first run)", info.name))
    return rows


def available_devices() -> List[str]:
    """``"cpu"``, ``"cuda"`` (and ``"cuda:i"`` when there are several GPUs) and ``"mps"`` where they exist."""
    import torch
    n = torch.cuda.device_count()
    devices = ["cpu"] + (["cuda"] if n else []) + ([f"cuda:{i}" for i in range(n)] if n > 1 else [])
    mps = getattr(torch.backends, "mps", None)
    return devices + (["mps"] if mps is not None and mps.is_available() else [])


def run_label(method: str, prompt) -> str:
    """The results table's "config" cell: the prompt setup's short name, or "-" without prompts."""
    if method in PIXEL_METHODS:
        return f"p={prompt.length} px"
    return prompt.short_name() if method in PROMPT_METHODS else "-"


def run_title(method: str, prompt) -> str:
    """The curves' title: method and prompt setup."""
    label = run_label(method, prompt)
    return f"{method} {label}" if label != "-" else method


class LabRunner:
    """One run at a time, in the caller's thread or a background one.

    Args:
        options: the lab's run options (``n_val``, ``n_test``, ``seed``, ...), read at each run.
    """

    def __init__(self, options: Dict[str, Any]) -> None:
        self.options = options
        self.vits: Dict[str, Any] = {}
        self.data: Dict[tuple, Any] = {}
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        """True while a background run is in progress."""
        return self.thread is not None and self.thread.is_alive()

    def start(self, target: Callable, *args: Any) -> None:
        """Run ``target(*args)`` in a daemon thread."""
        self.thread = threading.Thread(target=target, args=args, daemon=True, name="vpt-training-lab")
        self.thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for a background run to end; True when none is running any more."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
        return not thread or not thread.is_alive()

    def finished(self) -> None:
        """Called at the end of a run: a background run is over, so the next one may start."""
        if threading.current_thread() is self.thread:
            self.thread = None

    def dataset(self, task: str, split: str, backbone: str, vit, n: Optional[int]):
        key = (task, split, backbone, n, self.options["seed"])
        if key not in self.data:
            self.data[key] = load_task(task, split, vit, n=n, seed=self.options["seed"])
        return self.data[key]

    def run(self, spec: Tuple, n_train: int, *, status: Callable[[str], None],
            on_model: Callable[[Any, int], None], callbacks: List[Callable]) -> Tuple[Dict[str, Any], Any]:
        """Load, build, train and evaluate on test the run ``spec`` (``TrainingLab.config()``).

        ``status`` gets progress sentences, ``on_model(model, total_steps)`` the model before it
        trains, ``callbacks`` go to ``vx.train``. Returns (the results row, the ``vx.History``).
        """
        method, prompt, tcfg, task, backbone = spec
        status(f"loading {backbone} and {task}...")
        if backbone not in self.vits:
            self.vits[backbone] = load_backbone(backbone)
        vit = self.vits[backbone]
        data = [self.dataset(task, split, backbone, vit, n) for split, n in
                (("train", n_train), ("val", self.options["n_val"]), ("test", self.options["n_test"]))]
        model = make_model(method, vit, data[0].num_classes, seed=tcfg.seed,
                           prompt=prompt if method in PROMPT_METHODS else None)
        on_model(model, tcfg.epochs * math.ceil(len(data[0]) / tcfg.batch_size))
        hist = train(model, data[0], data[1], tcfg, stop=self.stop, callbacks=callbacks)
        status("evaluating on the test split...")
        test = evaluate(inference_model(model), data[2])
        return result_row(method, run_label(method, prompt), task, backbone, hist, test, n_train=len(data[0]),
                          epochs=tcfg.epochs, device=str(next(model.parameters()).device),
                          images_per_s=hist.images_per_s), hist
