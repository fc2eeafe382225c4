"""The training lab's results, as plain data and markup: one row per run, the HTML table, and the
loss/accuracy curves as a PNG. No widget here; the panel assigns the strings to its widgets."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Dict, List

from ..analysis.theme import figure, finish

# every setting that can differ between two runs has a column, so two rows never look alike when
# their settings were not
COLUMNS = ("#", "method", "config", "task", "backbone", "train imgs", "epochs", "base lr", "device", "val acc",
           "test acc", "trainable", "seconds", "img/s", "status")
ROW_KEYS = ("method", "config", "task", "backbone", "n_train", "epochs", "base_lr", "device", "val_acc", "test_acc",
            "trainable", "seconds", "images_per_s", "status")


def result_row(method: str, label: str, task: str, backbone: str, hist, test: Dict[str, Any],
               n_train: int = None, epochs: int = None, device: str = None,
               images_per_s: float = None) -> Dict[str, Any]:
    """The results row of one finished run (``hist``: its ``vx.History``; ``test``: ``evaluate``'s dict).

    ``images_per_s`` is the training throughput (``History.images_per_s``: forward + backward,
    validation excluded), the number to compare devices and the token vs prefix paths by.

    A run that spiked or diverged says so in ``status`` with the History's one-line hint.
    """
    status = hist.status if not hist.warnings or hist.status != "completed" else "completed, loss spiked"
    return {"method": method, "config": label, "task": task, "backbone": backbone, "n_train": n_train,
            "epochs": epochs, "base_lr": None if hist.base_lr is None else float(f"{hist.base_lr:.3g}"),
            "device": device, "val_acc": hist.best_val_acc, "test_acc": test["acc"], "trainable": hist.trainable,
            "seconds": round(hist.seconds, 1), "status": status,
            "images_per_s": None if images_per_s is None else round(images_per_s, 1),
            "hint": hist.message if hist.status == "diverged" else (hist.warnings[0] if hist.warnings else "")}


def _cell(row: Dict[str, Any], key: str) -> str:
    x = row.get(key)
    return "-" if x is None else f"{x:.3f}" if key.endswith("acc") else (
        f"{x:,}" if key == "trainable" else f"{x:,.0f}" if key == "images_per_s" else str(x))


def results_html(rows: List[Dict[str, Any]]) -> str:
    """The results table: a header and one numbered line per row."""
    head = "".join(f"<th style='padding:2px 8px;text-align:left'>{c}</th>" for c in COLUMNS)
    body = "".join("<tr>" + f"<td style='padding:2px 8px'>{i}</td>" + "".join(
        f"<td style='padding:2px 8px' title='{html.escape(r.get('hint', '') if k == 'status' else '')}'>"
        f"{html.escape(_cell(r, k))}</td>" for k in ROW_KEYS) + "</tr>" for i, r in enumerate(rows, 1))
    return (f"<table class='vx-results' style='border-collapse:collapse;font-size:12px'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def curves_png(hist, title: str) -> str:
    """Loss per step and per epoch, accuracy per epoch, as a base64 PNG (pyplot-free, thread-safe).

    Drawn in the current theme (``vx.viz.set_theme("projector")`` for a lecture room)."""
    fig, axes = figure(1, 2, (4.0, 2.6))
    ax_loss, ax_acc = axes[0]
    if hist.steps:
        ax_loss.plot([s["step"] for s in hist.steps], [s["loss"] for s in hist.steps], lw=0.8, alpha=0.6,
                     label="train (step)")
    ends = {s["epoch"]: s["step"] for s in hist.steps}  # step at which each epoch ended
    for split, style in (("train", "o-"), ("val", "s--")):
        rows = [r for r in hist.rows if r.get(f"{split}_loss") is not None]
        ax_loss.plot([ends.get(r["epoch"], 0) for r in rows], [r[f"{split}_loss"] for r in rows], style,
                     label=f"{split} (epoch)")
        ax_acc.plot([r["epoch"] for r in rows], [r.get(f"{split}_acc") for r in rows], style, label=split)
    ax_loss.set(xlabel="step", ylabel="loss", title=title)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    finish(fig)  # a legend on both panels, whole-number step and epoch ticks
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curves_output(png: str) -> Dict[str, Any]:
    """A display_data output for the curves: an <img> as wide as the panel, with the PNG as fallback."""
    img = f"<img src='data:image/png;base64,{png}' style='width:100%;height:auto' alt='training curves'/>"
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/html": img, "image/png": png, "text/plain": "<training curves>"}}
