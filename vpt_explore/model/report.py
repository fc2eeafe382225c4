"""Parameter counts of a model, per group (prompts, head, cls, backbone, adapter, ...), and the
tuned share of the backbone: the paper's "0.04% / 0.53% of ViT-B" numbers (Table 1, Fig. 1)."""
from __future__ import annotations

from typing import Dict

from torch import nn

from .prompt_init import PROMPT_PARAMS


def group_of(name: str) -> str:
    """The report group of a parameter name: prompts, head, cls, backbone, adapter, ..."""
    top = name.split(".")[0]
    if top in PROMPT_PARAMS or name.split(".")[-1] in PROMPT_PARAMS:
        return "prompts"
    if top == "cls_delta":
        return "cls"
    if top == "vit":
        return "adapter" if ".adapter." in name else "backbone"
    return top


def parameter_report(model: nn.Module) -> Dict[str, object]:
    """Trainable and total parameter counts, per group, and the share of the backbone.

    Returns:
        ``{"trainable": int, "total": int, "backbone": int, "percent": float,
        "groups": {group: trainable count}}`` where percent = 100 * trainable non-head / backbone
        (the paper's 0.04% / 0.53% for ViT-B p=50 count prompts only).
    """
    groups: Dict[str, int] = {}
    trainable = total = backbone = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        g = model.group_of(name)
        if g == "backbone":
            backbone += n
        if p.requires_grad:
            trainable += n
            groups[g] = groups.get(g, 0) + n
    tuned = trainable - groups.get("head", 0)
    return {"trainable": trainable, "total": total, "backbone": backbone,
            "percent": 100.0 * tuned / max(backbone, 1), "groups": groups}
