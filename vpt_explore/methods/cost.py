"""What a method costs: the paper's "total params" multiplier and the bytes a prompt file stores."""
from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Sequence

from torch import nn

from ..model.prompt_file import save_prompts
from .factory import make_model


def total_params_multiplier(method: str, vit: nn.Module, num_classes: Sequence[int], **kw) -> float:
    """The paper's "total params" column: (shared frozen + sum of per-task params) / backbone params.

    Args:
        num_classes: one entry per task (e.g. the 24 FGVC + VTAB tasks' class counts).
    """
    backbone = sum(p.numel() for n, p in vit.named_parameters() if not n.startswith("head."))
    shared, per_task = None, 0
    for c in num_classes:
        m = make_model(method, vit, c, **kw)
        rep = m.parameter_report()
        per_task += rep["trainable"]
        if shared is None:
            shared = sum(p.numel() for n, p in m.vit.named_parameters()
                         if not p.requires_grad and not n.startswith("head."))
    return (shared + per_task) / backbone


def storage_table(methods: Sequence[str], vit: nn.Module, num_classes: int, **kw) -> List[Dict]:
    """Bytes each method stores per task (a real prompt file) vs a full copy of the model."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full_bytes = None
        for method in ("full",) + tuple(m for m in methods if m != "full"):
            model = make_model(method, vit, num_classes, **kw)
            path = save_prompts(model, os.path.join(tmp, "m.safetensors"))
            size = os.path.getsize(path)
            full_bytes = full_bytes or size
            rows.append({"method": method, "trainable": model.parameter_report()["trainable"],
                         "bytes": size, "vs_full": size / full_bytes})
    return [r for r in rows if r["method"] in methods]
