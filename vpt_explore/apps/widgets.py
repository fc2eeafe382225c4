"""Training Lab: an ipywidgets panel to train and compare transfer methods (paper Figs. 5-7).

    lab = vx.widgets.training_lab(task="shapes-loc")   # shows the panel
    lab.train(block=True); lab.results                 # the same run from code (tests, fast mode)

The panel only builds a ``PromptConfig`` and a ``TrainConfig`` (``lab.config()``) and calls
``make_model``, ``load_task``, ``train`` and ``evaluate``. Invalid combinations are snapped with
a note or disabled, and any ``VPTError`` is shown in red, never as a traceback. Training runs in
a background thread so the kernel can still process the Stop button, which sets the
``threading.Event`` handed to ``vx.train``; the run then ends with status "stopped" and keeps its
trained weights. Only widgets shared by ipywidgets 7.7 (Colab) and 8 are used, and the thread
touches widgets only by assigning trait values.
"""
from __future__ import annotations

import html
import math
import time
from typing import Any, Dict, List, Optional, Tuple

from ..backbones.load import BACKBONES, DEFAULT_BACKBONE
from ..config import LOCATIONS, POOLS, SHARES, PromptConfig, TrainConfig
from ..data.registry import list_tasks
from ..errors import VPTError, bad_choice, require_package
from .lab_results import curves_output, curves_png, results_html
from .lab_rules import MAX_LENGTH, run_config, snap
from .lab_runner import (LAB_METHODS, PIXEL_METHODS, PROMPT_METHODS, LabRunner, available_backbones,
                         available_devices, run_title)

W = require_package("ipywidgets", feature="the training lab")  # OldPackageError below 7.7.1

LAYER_CHOICES = ("shallow", "deep", "first-k", "last-k")
PROMPT_FIELDS = ("layers", "k", "length", "location", "share", "pool")
OPTIONS = {"batch_size": 32, "n_val": 200, "n_test": 500, "seed": 0}
# the paper's setting (Sec. 4.1, App. A): 100 epochs, VTAB-1k's 800 training images, p tuned over
# {1, 5, 10, 50, 100, 200}; the "paper setting" button sets these (p=50, one of the grid's values)
PAPER = {"epochs": 100, "train_size": 800, "length": 50}


def _look(width: str = "330px") -> Dict[str, Any]:
    """Shared style and a fresh Layout for the labelled controls."""
    return {"style": {"description_width": "88px"}, "layout": W.Layout(width=width)}


def _choices(w) -> List[Any]:
    """The values a selection widget can take (its options may be (label, value) pairs)."""
    return [o[1] if isinstance(o, tuple) else o for o in w.options]


def _geometry(backbone: str) -> Tuple[int, int]:
    """(depth, number of patches) of a known backbone, without loading it."""
    info = BACKBONES[backbone]
    return info.depth, (info.resolution // info.patch) ** 2


class TrainingLab:
    """The panel: controls, Train / Stop, live curves and a results table (one row per run).

    Args:
        **defaults: initial control values (``method``, ``backbone``, ``task``, ``layers``, ``k``,
            ``length``, ``location``, ``share``, ``pool``, ``epochs``, ``base_lr`` (a number or
            ``"auto"``), ``train_size``, ``device``) and run options (``batch_size``, ``n_val``,
            ``n_test``, ``seed``). Out-of-range values are clamped with a message naming the field.
        probe_network: list hub backbones that are not cached when huggingface.co answers (a
            one-second check, skipped with ``HF_HUB_OFFLINE=1``).

    Attributes:
        widget: the root container (display it, or use ``training_lab``).
        controls: control name -> widget.
        results: one dict per finished run (the rows of the table).
        histories: the ``vx.History`` of each run, in the same order.
        model: the model of the latest run (it holds the trained weights, also after Stop).
    """

    def __init__(self, probe_network: bool = True, **defaults: Any) -> None:
        self.options = dict(OPTIONS)
        self.results: List[Dict[str, Any]] = []
        self.histories: List[Any] = []
        self.model = None
        self.steps_done = 0
        self.runner = LabRunner(self.options)   # caches, Stop event, background thread: no widgets
        self._vits = self.runner.vits           # name -> loaded backbone
        self._syncing, self._batch = False, None
        self._notes, self._error, self._run_error = [], "", ""
        self._build(probe_network)
        self.set(**defaults)

    # ------------------------------------------------------------------ layout
    def _build(self, probe_network: bool) -> None:
        tasks = [t for t in list_tasks() if t.offline and t.group != "upstream"]
        self._task_sizes = {t.name: t.sizes.get("train", 800) for t in tasks}
        backbones = available_backbones(probe_network=probe_network)  # (label, name): offline, then hub
        names = [t.name for t in tasks]
        task = "shapes-loc" if "shapes-loc" in names else names[0]
        depth, n_patches = _geometry(DEFAULT_BACKBONE)
        c = self.controls = {
            "method": W.Dropdown(options=list(LAB_METHODS), value="vpt-deep", description="method", **_look()),
            "backbone": W.Dropdown(options=backbones, value=DEFAULT_BACKBONE, description="backbone", **_look()),
            "device": W.Dropdown(options=["auto"] + available_devices(), value="auto", description="device",
                                 **_look()),
            "task": W.Dropdown(options=names, value=task, description="task", **_look()),
            "train_size": W.IntSlider(value=min(200, self._task_sizes[task]), min=8,
                                      max=max(8, self._task_sizes[task]), description="train size", **_look()),
            "epochs": W.IntSlider(value=10, min=1, max=100, description="epochs", **_look()),
            "auto_lr": W.Checkbox(value=True, description="auto lr (method default)", indent=False,
                                  layout=W.Layout(width="330px")),
            "base_lr": W.FloatLogSlider(value=1.0, base=10, min=-4, max=2, step=0.25, readout_format=".3g",
                                        description="base lr", **_look()),
            "layers": W.ToggleButtons(options=list(LAYER_CHOICES), value="deep", description="layers",
                                      style={"description_width": "88px", "button_width": "70px"},
                                      layout=W.Layout(width="420px")),
            "k": W.IntSlider(value=min(3, depth), min=1, max=depth, description="k (blocks)", **_look()),
            "length": W.IntSlider(value=10, min=1, max=max(MAX_LENGTH, n_patches), description="length p",
                                  **_look()),
            "location": W.Dropdown(options=list(LOCATIONS), value="prepend", description="location", **_look()),
            "share": W.Dropdown(options=list(SHARES), value="none", description="sharing", **_look()),
            "pool": W.Dropdown(options=list(POOLS), value="cls", description="pooling", **_look()),
        }
        for name, w in c.items():
            w.observe(lambda change, name=name: self._changed(name, change), names="value")
        self.train_button = W.Button(description="Train", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.paper_button = W.Button(description="paper setting", icon="book",
                                     tooltip="100 epochs, 800 training images, p=50 (paper Sec. 4.1, App. A)")
        self.train_button.on_click(lambda _: self.train(block=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.paper_button.on_click(lambda _: self.paper_setting())
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="220px"))
        self.status = W.Label(value="ready")
        self.message = W.HTML(value="")
        self.curves = W.Output(layout=W.Layout(min_height="60px", width="100%"))  # curves: full width
        self.table = W.HTML(value=results_html(self.results))
        run_box = W.VBox([c[n] for n in ("method", "backbone", "device", "task", "train_size", "epochs",
                                         "auto_lr", "base_lr")] + [self.paper_button])
        prompt_box = W.VBox([W.HTML("<b>Prompts</b> (Fig. 5 location, Fig. 6 length, Fig. 7 depth)")]
                            + [c[n] for n in PROMPT_FIELDS])
        self.widget = W.VBox([
            W.HTML("<h3 style='margin:4px 0'>VPT Training Lab</h3>"),
            W.HBox([run_box, prompt_box]), self.message,
            W.HBox([self.train_button, self.stop_button, self.progress, self.status]),
            self.curves, self.table])
        self._refresh(notes=[])

    def __repr__(self) -> str:  # training_lab() already displayed the panel: no second copy
        return f"<TrainingLab: {len(self.results)} run(s); show it with display(lab.widget)>"

    # ------------------------------------------------------------------ values and rules
    def set(self, **values: Any) -> None:
        """Set controls or run options by name; a bad value leaves a message naming the field.

        Raises:
            ConfigError: an unknown name (a typo in code, not a value a user picked).
        """
        notes: List[str] = []
        self._batch = []
        try:
            for name, value in values.items():
                if name in self.options:
                    self.options[name] = value
                    continue
                if name not in self.controls:
                    raise bad_choice("control", name, list(self.controls) + list(self.options))
                w = self.controls[name]
                if name == "base_lr":
                    self.controls["auto_lr"].value = value in ("auto", None)
                    if value in ("auto", None):
                        continue
                if isinstance(w, (W.IntSlider, W.FloatLogSlider)):
                    lo, hi = (w.min, w.max) if isinstance(w, W.IntSlider) else (w.base ** w.min, w.base ** w.max)
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                        notes.append(f"{w.description}={value!r} is not a number; kept {w.value!r}")
                        continue
                    clamped = type(w.value)(min(max(value, lo), hi))
                    if clamped != value:
                        notes.append(f"{w.description}={value!r} is outside {lo:g}..{hi:g}; set to {clamped:g}")
                    value = clamped
                elif hasattr(w, "options") and value not in _choices(w):
                    notes.append(f"{bad_choice(w.description, value, _choices(w))}; kept {w.value!r}")
                    continue
                w.value = value
        finally:
            notes, self._batch = self._batch + notes, None
        self._refresh(notes)

    def _changed(self, name: str, change: Dict[str, Any]) -> None:
        """Apply the rules after a user change (the latest change wins), then re-validate."""
        if self._syncing:
            return
        notes = self._rules(name, change)
        if self._batch is not None:  # inside set(): report all notes at the end
            self._batch.extend(notes)
        else:
            self._refresh(notes)

    def _rules(self, name: str, change: Dict[str, Any]) -> List[str]:
        """Apply ``lab_rules.snap`` to the controls (limits first, then values); returns its notes."""
        c = self.controls
        values = {k: w.value for k, w in c.items()}
        depth, n_patches = _geometry(values["backbone"])
        changes, limits, notes = snap(values, name, change.get("old"), change.get("new"), depth=depth,
                                      n_patches=n_patches, task_size=self._task_sizes.get(values["task"]))
        self._syncing = True
        try:
            for k, maximum in limits.items():
                c[k].max = maximum
            for k, value in changes.items():
                c[k].value = value
        finally:
            self._syncing = False
        return notes

    def _refresh(self, notes: List[str]) -> None:
        """Enable/disable controls for the current values; show notes and any config error."""
        c, prompt_on = self.controls, self.controls["method"].value in PROMPT_METHODS
        pixel = c["method"].value in PIXEL_METHODS
        concat = c["location"].value == "concat-channel"
        for n in PROMPT_FIELDS:
            c[n].disabled = not prompt_on or (pixel and n != "length")
        tokens_off = not prompt_on or pixel
        c["layers"].disabled = tokens_off or concat
        c["share"].disabled = tokens_off or concat
        c["k"].disabled = tokens_off or c["layers"].value not in ("first-k", "last-k") or concat
        c["base_lr"].disabled = c["auto_lr"].value
        if not prompt_on:
            notes = notes + [f"{c['method'].value} has no prompts: the prompt controls are off"]
        elif pixel:
            notes = notes + [f"{c['method'].value} learns pixels on the input image (Bahng et al. 2022): length p is "
                             f"its width in pixels; the token controls are off"]
        self._notes, self._run_error = notes, ""  # a change clears the last run's error
        try:
            self.config()
            self._error = ""
        except VPTError as e:
            self._error = str(e)
        self._show()

    def _show(self, run_error: Optional[str] = None, running: bool = False) -> None:
        """Render notes (amber), the config error and the last run's error (red); set Train."""
        if run_error is not None:
            self._run_error = run_error
        parts = [f"<div style='color:#7a5a00'>&#9432; {html.escape(n)}</div>" for n in self._notes]
        for err in dict.fromkeys(e for e in (self._error, self._run_error) if e):
            parts.append(f"<div style='color:#b00020'><b>&#10007;</b> {html.escape(err)}</div>")
        self.message.value = "".join(parts)
        self.train_button.disabled = bool(self._error) or running or self.running

    def config(self) -> Tuple[str, PromptConfig, TrainConfig, str, str]:
        """What Train would run: (method, PromptConfig, TrainConfig, task, backbone); see ``lab_rules.run_config``.

        Raises:
            VPTError: the controls describe an invalid run (the panel shows the message).
        """
        v = {n: w.value for n, w in self.controls.items()}
        kind = "pixel" if v["method"] in PIXEL_METHODS else "tokens" if v["method"] in PROMPT_METHODS else "none"
        return run_config(v, kind=kind, depth=_geometry(v["backbone"])[0], task_size=self._task_sizes[v["task"]],
                          options=self.options)

    def paper_setting(self) -> None:
        """Set the paper's epochs, training-set size and a prompt length from its grid (``PAPER``).

        The train size is capped by the task's split; on a CPU such a run takes minutes.
        """
        size = self._task_sizes[self.controls["task"].value]
        self.set(**{**PAPER, "train_size": min(PAPER["train_size"], size)})
        self._notes = self._notes + [
            f"paper setting: {PAPER['epochs']} epochs, {min(PAPER['train_size'], size)} training images, p="
            f"{PAPER['length']} (the paper tunes p over 1, 5, 10, 50, 100, 200 per task on the val split)"]
        self._show()

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a background run is in progress."""
        return self.runner.running

    def train(self, block: bool = False) -> Optional[Dict[str, Any]]:
        """Train with the current controls; with ``block=False`` in a background thread.

        Returns:
            The new results row when ``block`` is True and the run finished, else None.
        """
        if self.running:
            self._show("a run is already in progress: press Stop or wait for it")
            return None
        try:
            spec = self.config()
        except VPTError:
            self._refresh(self._notes)  # shows the config error in red
            return None
        self.runner.stop.clear()
        self._show("", running=True)
        self.stop_button.disabled = False
        n_train = self.controls["train_size"].value
        if block:
            return self._run(spec, n_train, raise_unexpected=True)
        self.runner.start(self._run, spec, n_train)
        return None

    def stop(self) -> None:
        """Ask the running training to stop after the current step (keeps the trained weights)."""
        self.runner.stop.set()
        self.status.value = "stopping..."

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for a background run to end; True when none is running any more."""
        return self.runner.wait(timeout)

    def _run(self, spec, n_train: int, raise_unexpected: bool = False) -> Optional[Dict[str, Any]]:
        """One run (``LabRunner.run``), shown in the panel: a row, curves, status. Errors go to the panel."""
        title = run_title(spec[0], spec[1])
        try:
            row, hist = self.runner.run(spec, n_train, status=self._set_status, on_model=self._started,
                                        callbacks=[self._callback(title, spec[2].epochs)])
            self.histories.append(hist)
            self.results.append(row)
            self.table.value = results_html(self.results)
            self._draw(hist, title)
            self.status.value = f"{hist.status}: test acc {row['test_acc']:.3f} ({hist.seconds:.1f} s)"
            self._run_error = "" if hist.status in ("completed", "stopped") else hist.message
            return row
        except VPTError as e:
            self.status.value, self._run_error = "error", str(e)
        except Exception as e:  # noqa: BLE001 - the panel must not die; code callers still see it
            self.status.value, self._run_error = "error", f"{type(e).__name__}: {e}"
            if raise_unexpected:
                raise
        finally:
            self.runner.finished()  # a background run is over: Train can start the next one
            self.stop_button.disabled = True
            self._show()
        return None

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _started(self, model, total_steps: int) -> None:
        """The run's model is built: keep it (Stop keeps its weights) and reset progress and curves."""
        self.model, self.steps_done = model, 0
        self.progress.max = total_steps
        self.progress.value, self.curves.outputs = 0, ()

    def _callback(self, title: str, epochs: int):
        """A vx.train callback: progress and status every 0.5 s, curves every epoch (or 2 s)."""
        last = {"status": 0.0, "draw": 0.0}

        def on_event(event: str, hist, model) -> None:
            self.steps_done += event == "step"
            now = time.time()
            if event == "step" and now - last["status"] < 0.5:
                return
            last["status"] = now
            self.progress.value = min(len(hist.steps), self.progress.max)
            loss = hist.steps[-1]["loss"] if hist.steps else float("nan")
            self.status.value = f"epoch {len(hist.rows) + (event == 'step')}/{epochs}  loss {loss:.3f}"
            if event == "epoch" or now - last["draw"] > 2.0:
                last["draw"] = now
                self._draw(hist, title)
        return on_event

    def _draw(self, hist, title: str) -> None:
        self.curves.outputs = (curves_output(curves_png(hist, title)),)


def training_lab(**defaults: Any) -> TrainingLab:
    """Build a :class:`TrainingLab`, display it, and return it (see the class for ``defaults``)."""
    from IPython.display import display
    lab = TrainingLab(**defaults)
    display(lab.widget)
    return lab
