"""``PromptedViT``: Visual Prompt Tuning around a frozen timm VisionTransformer (paper Sec. 3.2).

The wrapper follows timm's ``forward_features`` step by step and inserts prompt tokens after the
position embedding (so they carry no position), right after the ``num_prefix_tokens`` ([CLS] and
register tokens)::

    x_0, E_0        = Embed(I)                       eq. (1)  patch_embed -> _pos_embed -> norm_pre
    shallow: [x_1, Z_1, E_1] = L_1([x_0, P, E_0])    eqs. (4)-(6)  prompts enter block 0, carry on
    deep:    [x_i, _, E_i]   = L_i([x_{i-1}, P_{i-1}, E_{i-1}])   eqs. (7)-(8)  replaced per block
    y               = Head(pool(norm(x_N ...)))      eq. (3)

Nothing of the ViT is copied or subclassed: ``self.vit`` is the timm model, frozen with
``requires_grad_(False)`` and kept in eval mode while prompts train.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError
from . import checks, prompt_init, report
from .frozen import new_head
from .prefix import prefix_train_features, uses_prefix_path
from .prompt_init import PROMPT_PARAMS, xavier_bound  # noqa: F401 - public: vx.prompts.xavier_bound
from .tokens import add_prompts, insert_prompts, split_tokens


class PromptedViT(nn.Module):
    """A frozen timm ViT plus learnable prompts and a linear head.

    Args:
        vit: a timm ``VisionTransformer`` (shared, not copied; its weights are frozen).
        cfg: the prompt setup; defaults to ``PromptConfig()`` (VPT-deep, p=10).
        num_classes: size of the new linear head; ``None`` copies the backbone's own head.
        init_data: a Dataset or DataLoader of (image, label), needed for ``cfg.init == "cls"``.
        freeze: freeze the backbone (the VPT setting). Baselines that tune it pass False.
        seed: seed for the prompt initialisation (``None``: torch's global generator).
    """

    def __init__(self, vit: nn.Module, cfg: Optional[PromptConfig] = None,
                 num_classes: Optional[int] = None, *, init_data=None, freeze: bool = True,
                 seed: Optional[int] = None):
        super().__init__()
        checks.check_backbone(vit)
        cfg = cfg if cfg is not None else PromptConfig()
        if not isinstance(cfg, PromptConfig):
            raise ConfigError(f"cfg={cfg!r} must be a vx.PromptConfig")
        self.vit, self.cfg = vit, cfg
        self.embed_dim = D = vit.embed_dim
        self.depth = len(vit.blocks)
        self.num_prefix = vit.num_prefix_tokens  # [CLS] + register tokens
        self.num_patches = vit.patch_embed.num_patches
        self.prompt_blocks = cfg.block_indices(self.depth) if cfg.length > 0 else ()
        self.prompt_slot = "before"  # "after": prompts after the patches (same logits, Sec. 3.2)
        self.train_path = "auto"     # "token": always train through forward_tokens (see forward_features)
        self._prefix_exact: Optional[bool] = None  # cached by prefix.uses_prefix_path
        checks.check_config_against_backbone(cfg, vit)
        if freeze:
            vit.requires_grad_(False)

        self.head, self.num_classes = new_head(vit.head, D, num_classes, getattr(vit, "num_classes", None))
        self.prompt_dropout = nn.Dropout(cfg.dropout)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, param in prompt_init.build_prompts(vit, cfg, self.prompt_blocks, gen).items():
            setattr(self, name, param)                  # prompts | pixel_prompts | channel_*
        if cfg.learn_cls:  # learning the [CLS] token == learning a delta added to it
            self.cls_delta = nn.Parameter(torch.zeros(1, 1, D))
        if cfg.init == "cls" and cfg.length > 0:
            self.init_from_class_means(init_data)
        for name in PROMPT_PARAMS:
            if hasattr(self, name) and cfg.fixed and name != "channel_weight":
                getattr(self, name).requires_grad_(False)

    # ----------------------------------------------------------------- construction
    def init_from_class_means(self, data) -> torch.Tensor:
        """Fig. 13 [CLS]-prototype init: prompts = class means of the backbone's final [CLS]
        (``data``: a Dataset or DataLoader of (image, label)); returns the (C, D) prototypes."""
        return prompt_init.init_from_class_means(self, data)

    # ----------------------------------------------------------------- prompts
    def _set_index(self, block: int) -> int:
        return 0 if prompt_init.num_prompt_sets(self.cfg, self.prompt_blocks) == 1 \
            else self.prompt_blocks.index(block)

    def layer_prompts(self, i: int) -> Optional[torch.Tensor]:
        """The (p, D) prompt tokens fed at the input of block ``i`` (before dropout), or None.

        For ``location="add"`` this is the (1 or m, D) tensor added to the patch embeddings; for
        ``"concat-channel"`` there are no prompt tokens and the result is None.
        """
        if i not in self.prompt_blocks or self.cfg.location == "concat-channel":
            return None
        k = self._set_index(i)
        if self.cfg.location == "prepend-pixel":
            pix = self.pixel_prompts[k]                          # (n, C, ph, pw)
            tok = self.vit.patch_embed.proj(pix).flatten(1)      # (n, D): one patch each
            tok = self.vit.patch_embed.norm(tok)
        else:
            tok = self.prompts[k]                                # (n, D)
        if self.cfg.share in ("intra", "all") and self.cfg.location != "add":
            tok = tok.expand(self.cfg.length, -1)                # (p, D) one vector repeated
        return tok

    def prompts_for_batch(self, block: int, B: int) -> Optional[torch.Tensor]:
        """The prompts that enter block ``block`` for a batch of B images: (B, p, D) after prompt
        dropout, or None. The one hook subclasses override (the ensemble gives each copy of the
        batch its own member's prompts); both the token and the prefix path read it."""
        P = self.layer_prompts(block)
        if P is None:
            return None
        return self.prompt_dropout(P.unsqueeze(0).expand(B, -1, -1))      # (B, p, D)

    def insert(self, x: torch.Tensor, block: int, n_old: int) -> tuple[torch.Tensor, int]:
        """Put block ``block``'s prompts into x (B, R+n_old+m, D); returns new x and prompt count."""
        P = self.prompts_for_batch(block, x.shape[0])
        if P is None:
            return x, n_old
        if self.cfg.location == "add":                                     # same length, element-wise
            return add_prompts(x, P, self.num_prefix)
        return insert_prompts(x, P, self.num_prefix, n_old, self.prompt_slot)  # (B, R+p+m, D)

    _insert = insert  # the name notebooks and older code used

    # ----------------------------------------------------------------- forward
    def check_images(self, images: torch.Tensor) -> None:
        """Fail fast, before any compute, on a batch the backbone cannot take."""
        checks.check_images(self.vit, images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. (1): patches -> embeddings + position, with [CLS]/registers in front: (B, R+m, D)."""
        vit = self.vit
        if self.cfg.location == "concat-channel" and self.cfg.length > 0:
            x = self._embed_concat_channel(images)                  # (B, m, D) or (B, h, w, D)
        else:
            x = vit.patch_embed(images)                             # (B, m, D)
        x = vit._pos_embed(x)                                       # (B, R+m, D)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        if self.cfg.learn_cls:
            x = torch.cat([x[:, :1] + self.cls_delta, x[:, 1:]], dim=1)
        return x

    def _embed_concat_channel(self, images: torch.Tensor) -> torch.Tensor:
        """Patch projection widened to C+c input channels; the c extra channels are learned."""
        pe = self.vit.patch_embed
        B = images.shape[0]
        extra = self.channel_prompts.unsqueeze(0).expand(B, -1, -1, -1)      # (B, c, H, W)
        weight = torch.cat([pe.proj.weight, self.channel_weight], dim=1)      # (D, C+c, ph, pw)
        x = F.conv2d(torch.cat([images, extra], dim=1), weight, pe.proj.bias,
                     stride=pe.proj.stride, padding=pe.proj.padding)           # (B, D, h, w)
        if getattr(pe, "flatten", True):
            x = x.flatten(2).transpose(1, 2)                                   # (B, m, D)
        else:
            x = x.permute(0, 2, 3, 1)                                          # (B, h, w, D)
        return pe.norm(x)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        """All final tokens after ``norm``: (B, R+p+m, D), and the number p of prompt tokens."""
        self.check_images(images)
        x = self.embed(images)
        n_p = 0
        for i, blk in enumerate(self.vit.blocks):
            if i in self.prompt_blocks:
                x, n_p = self.insert(x, i, n_p)    # eqs. (5)/(7): insert or replace
            x = blk(x)
        return self.vit.norm(x), n_p

    def pool(self, x: torch.Tensor, n_p: int) -> torch.Tensor:
        """Fig. 8 head inputs from the final tokens (B, R+p+m, D) -> (B, D)."""
        prefix, prompts, patches = split_tokens(x, self.num_prefix, n_p, self.prompt_slot)
        pool = self.cfg.pool
        if pool == "cls":
            return x[:, 0]
        if pool == "image":
            return patches.mean(dim=1)
        if pool == "prompt":
            return prompts.mean(dim=1)
        return x.mean(dim=1)  # global: [CLS], registers, prompts and patches

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head: (B, D).

        In training mode a VPT-deep setup whose prompts only ever act as keys/values runs the exact
        prefix path (``vx.prefix.uses_prefix_path`` decides; same logits and gradients up to float
        rounding, but the prompt tokens skip the query, attention output and MLP of every block).
        Set ``model.train_path = "token"`` to always use ``forward_tokens``.
        """
        return prefix_train_features(self, images) if uses_prefix_path(self) else self.token_features(images)

    def token_features(self, images: torch.Tensor) -> torch.Tensor:
        """The token path: ``forward_tokens`` -> ``pool`` -> ``fc_norm``: (B, D)."""
        x, n_p = self.forward_tokens(images)
        return self.vit.fc_norm(self.pool(x, n_p))

    def uses_prefix_path(self) -> bool:
        """True when a training forward goes through the exact prefix path (see ``vx.prefix``)."""
        return uses_prefix_path(self)

    def live_prompts(self, i: int, B: int) -> Optional[torch.Tensor]:
        """Block i's prompt tokens with gradients, as the prefix path takes them: (1, p, D), or
        (B, p, D) with one dropout draw per image (as the token path's insertion does); None if none."""
        if i not in self.prompt_blocks:
            return None
        P = self.layer_prompts(i)                                           # (p, D)
        if self.prompt_dropout.p > 0 or type(self).prompts_for_batch is not PromptedViT.prompts_for_batch:
            return self.prompts_for_batch(i, B)                             # (B, p, D)
        return P.unsqueeze(0)                                               # (1, p, D): shared by the batch

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """Eq. (3): y = Head(x_N) on pooled features (B, D) -> (B, num_classes)."""
        return self.head(self.vit.head_drop(feats))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def as_prefix(self):
        """The exact VPT-prefix inference path (cached per-block K/V): a ``vx.prefix.PrefixViT``."""
        from .prefix import PrefixViT
        return PrefixViT(self)

    def train(self, mode: bool = True) -> "PromptedViT":
        """Train the prompts, but keep a fully frozen backbone in eval mode (no dropout/drop-path)."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.vit.parameters()):
            self.vit.eval()
        return self

    # ----------------------------------------------------------------- reports
    group_of = staticmethod(report.group_of)

    def parameter_report(self) -> Dict[str, object]:
        """Trainable and total parameter counts per group, and the tuned share of the backbone
        (``{"trainable", "total", "backbone", "percent", "groups"}``, see ``model.report``)."""
        return report.parameter_report(self)

    # ----------------------------------------------------------------- files
    def save_prompts(self, path) -> "object":
        """Save only what this model trained (safetensors + config + backbone fingerprint)."""
        from .prompt_file import save_prompts
        return save_prompts(self, path)

    @classmethod
    def load_prompts(cls, path, vit: nn.Module, **kw) -> "PromptedViT":
        """Rebuild a saved model on ``vit``; fails clearly if the file belongs to another backbone."""
        from ..methods.load import load_model  # the one upward import (see tests/test_layers.py)
        return load_model(path, vit, **kw)

    def extra_repr(self) -> str:
        return f"cfg={self.cfg.short_name()}, blocks={list(self.prompt_blocks)}"
