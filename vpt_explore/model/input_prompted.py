"""``InputPromptedModel``: any frozen timm backbone with a prompt on its *input* and a new linear head.

    y = Head(pool(backbone(prompter(I))))

The prompter is one of ``pixel_prompts`` (Bahng et al.'s pad / fixed-patch / random-patch, added to
the image), ``conv_prompts.ConvPadPrompter`` (VPT's ConvNet prompt, pixels around the image) or
``None`` (a linear probe). The backbone is a timm model with ``forward_features`` and
``forward_head(..., pre_logits=True)``: a ViT, a Swin, a ResNet, a ConvNeXt. Its own pooling is kept
(ViT: its ``global_pool``; Swin and ConvNets: average pooling), and it stays frozen and in eval mode.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError
from .frozen import FrozenBackboneModel, new_head

KINDS = ("vit", "swin", "convnet")


def backbone_kind(model: nn.Module) -> str:
    """``"vit"`` (a timm VisionTransformer: token prompts), ``"swin"`` (window prompts) or
    ``"convnet"`` (no tokens: only input prompts).

    Raises:
        ConfigError: the model is not a timm classifier (no ``forward_features`` / ``forward_head``).
    """
    from .checks import check_backbone
    from .swin_prompts import is_swin
    if is_swin(model):
        return "swin"
    try:
        check_backbone(model)
        return "vit"
    except ConfigError:
        pass
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return "convnet"
    raise ConfigError(f"backbone {type(model).__name__} is not a timm model with forward_features and "
                      f"forward_head; load one with vx.load_backbone(...) or timm.create_model(...)")


def input_size(model: nn.Module) -> Tuple[int, int]:
    """(H, W) the backbone takes: its patch embedding's size, else its pretrained_cfg input size."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        return tuple(pe.img_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224))[1:])


def feature_dim(model: nn.Module) -> int:
    """Width of ``forward_head(..., pre_logits=True)``: the new head's input."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class InputPromptedModel(FrozenBackboneModel):
    """A frozen backbone, an optional input prompter and a linear head.

    Args:
        backbone: a timm model (shared, not copied; frozen).
        prompter: an ``nn.Module`` mapping images to images, or ``None``.
        num_classes: size of the new head; ``None`` copies the backbone's own classifier.
        cfg: the PromptConfig it was built from (``length`` = p), kept for labels and reports.
        freeze: freeze the backbone (the prompt-tuning setting).
    """

    GROUPS = {"head": "head", "prompter": "prompts"}

    def __init__(self, backbone: nn.Module, prompter: Optional[nn.Module], num_classes: Optional[int],
                 *, cfg: Optional[PromptConfig] = None, freeze: bool = True):
        super().__init__()
        self.kind = backbone_kind(backbone)
        self.backbone, self.prompter = backbone, prompter
        self.cfg = cfg if cfg is not None else PromptConfig(length=0)
        self.embed_dim = feature_dim(backbone)
        if freeze:
            backbone.requires_grad_(False)
        self.head, self.num_classes = new_head(backbone.get_classifier(), self.embed_dim, num_classes,
                                               getattr(backbone, "num_classes", None))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head: (B, D)."""
        x = self.prompter(images) if self.prompter is not None else images   # (B, C, H', W')
        x = self.backbone.forward_features(x)
        return self.backbone.forward_head(x, pre_logits=True)                  # (B, D)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, p={self.cfg.length}"
