"""Building a PromptedViT's prompts (paper Sec. 4.1 init, App. B sharing, Fig. 13 [CLS] init).

``build_prompts`` makes the learnable tensors for a ``PromptConfig`` (uniform(-v, v) with the
paper's Xavier bound ``v``); ``init_from_class_means`` overwrites them with class means of the
backbone's final [CLS] embeddings (``init="cls"``).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError, DataError

# the attribute names a PromptedViT stores its prompt tensors under
PROMPT_PARAMS = ("prompts", "pixel_prompts", "channel_prompts", "channel_weight")


def xavier_uniform_bound(fan_in: int, fan_out: int) -> float:
    """v = sqrt(6 / (fan_in + fan_out)): Xavier uniform, the bound of every uniform(-v, v) prompt init."""
    return math.sqrt(6.0 / (fan_in + fan_out))


def xavier_bound(vit: nn.Module) -> float:
    """v = sqrt(6 / (C * patch_h * patch_w + d)): the paper's uniform(-v, v) prompt init (Sec. 4.1),
    Xavier uniform of the patch projection: prompts start at the scale of patch embeddings."""
    ph, pw = vit.patch_embed.patch_size
    in_chans = getattr(vit.patch_embed.proj, "in_channels", 3)
    return xavier_uniform_bound(in_chans * ph * pw, vit.embed_dim)


def num_prompt_sets(cfg: PromptConfig, prompt_blocks) -> int:
    """How many prompt sets are stored: one per prompted block, or 1 when shared across blocks."""
    if cfg.share in ("inter", "all") or len(prompt_blocks) <= 1:
        return 1
    return len(prompt_blocks)


def build_prompts(vit: nn.Module, cfg: PromptConfig, prompt_blocks,
                  gen: Optional[torch.Generator]) -> Dict[str, nn.Parameter]:
    """The learnable prompt tensors for ``cfg``, by attribute name (empty for length 0)."""
    if cfg.length == 0:
        return {}
    S = num_prompt_sets(cfg, prompt_blocks)
    n = 1 if cfg.share in ("intra", "all") else cfg.length  # stored vectors per set
    pe, D = vit.patch_embed, vit.embed_dim

    def uniform(*shape, bound):
        return nn.Parameter((torch.rand(*shape, generator=gen) * 2 - 1) * bound)

    if cfg.location in ("prepend", "add"):
        return {"prompts": uniform(S, n, D, bound=xavier_bound(vit))}          # (S, n, D)
    C, (ph, pw) = pe.proj.in_channels, pe.patch_size
    if cfg.location == "prepend-pixel":
        return {"pixel_prompts": uniform(S, n, C, ph, pw, bound=1.0)}          # (S, n, C, ph, pw)
    H, W = pe.img_size  # concat-channel: c extra input channels and the widened projection's new kernel
    return {"channel_prompts": uniform(cfg.length, H, W, bound=1.0),            # (c, H, W)
            # zero kernel: the widened projection reproduces the pretrained output at init
            "channel_weight": nn.Parameter(torch.zeros(D, cfg.length, ph, pw))}


@torch.no_grad()
def init_from_class_means(model: nn.Module, data) -> torch.Tensor:
    """Fig. 13 [CLS]-prototype init: prompts = class means of the backbone's final [CLS].

    Args:
        model: a ``PromptedViT`` with ``length == num_classes``.
        data: a Dataset or DataLoader yielding (image, label).

    Returns:
        The (num_classes, D) prototype matrix that was copied into every prompt set.
    """
    if data is None:
        raise ConfigError(
            "init='cls' builds prompts from class means of [CLS] embeddings, so it needs data: "
            "pass init_data=<Dataset or DataLoader> to PromptedViT, or use init='random'"
        )
    if model.cfg.length != model.num_classes:
        raise ConfigError(
            f"init='cls' makes one prompt per class, so length must equal num_classes="
            f"{model.num_classes}, not length={model.cfg.length}"
        )
    loader = data if isinstance(data, torch.utils.data.DataLoader) else \
        torch.utils.data.DataLoader(data, batch_size=64)
    D, C, vit = model.embed_dim, model.num_classes, model.vit
    sums, counts = torch.zeros(C, D), torch.zeros(C)
    was_training = vit.training
    vit.eval()
    for images, labels in loader:
        tokens = vit.forward_features(images.to(model.prompts.device))  # (B, R+m, D)
        cls = tokens[:, 0].float().cpu()                                  # (B, D)
        sums.index_add_(0, labels.long().cpu(), cls)
        counts.index_add_(0, labels.long().cpu(), torch.ones(len(labels)))
    vit.train(was_training)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"init='cls': classes {missing} have no examples in init_data")
    protos = sums / counts[:, None]                                       # (C, D)
    model.prompts.data.copy_(protos.expand_as(model.prompts))
    return protos
