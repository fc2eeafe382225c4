"""What every wrapper of a frozen backbone shares: the new linear head (eq. 3, ``y = Head(x_N)``),
``train()`` that keeps a fully frozen backbone in eval mode, and the parameter report per group."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from . import report


def new_head(own_head: nn.Module, dim: int, num_classes: Optional[int],
             own_classes: Optional[int]) -> Tuple[nn.Module, Optional[int]]:
    """A trainable ``nn.Linear(dim, num_classes)``, or a copy of the backbone's ``own_head`` when
    ``num_classes`` is None; returns (head, its number of classes)."""
    if num_classes is None:
        head, classes = copy.deepcopy(own_head), own_classes
    else:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes={num_classes!r} must be an integer >= 1")
        head, classes = nn.Linear(dim, num_classes), num_classes
    head.requires_grad_(True)
    return head, classes


class FrozenBackboneModel(nn.Module):
    """Base of PromptedViT, PromptedSwin and InputPromptedModel:
    ``forward = forward_head o forward_features``.

    Subclasses set ``BACKBONE`` (the attribute holding the frozen timm model) and ``GROUPS``
    (top-level parameter name -> report group), and define ``forward_features``.
    """

    BACKBONE = "backbone"
    GROUPS: Dict[str, str] = {"head": "head"}

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """The new head on pooled features (B, D) -> (B, num_classes)."""
        return self.head(feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def train(self, mode: bool = True) -> "FrozenBackboneModel":
        """Train prompts and head; keep a fully frozen backbone in eval mode (dropout, drop-path and
        batch-norm statistics stay as pretrained)."""
        super().train(mode)
        backbone = getattr(self, self.BACKBONE)
        if mode and not any(p.requires_grad for p in backbone.parameters()):
            backbone.eval()
        return self

    @classmethod
    def group_of(cls, name: str) -> str:
        """The report group of a parameter name: prompts, head or backbone."""
        top = name.split(".")[0]
        return "backbone" if top == cls.BACKBONE else cls.GROUPS.get(top, top)

    def parameter_report(self) -> Dict[str, object]:
        """Trainable and total counts per group (``model.report.parameter_report``)."""
        return report.parameter_report(self)
