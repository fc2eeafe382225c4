"""``PromptedViT``: Visual Prompt Tuning around a frozen timm VisionTransformer (paper Sec. 3.2).

The wrapper follows timm's ``forward_features`` step by step and inserts prompt tokens after the
position embedding (so they carry no position), right after the ``num_prefix_tokens`` ([CLS] and
register tokens)::

    x_0, E_0        = Embed(I)                       eq. (1)  patch_embed -> _pos_embed -> norm_pre
    shallow: [x_1, Z_1, E_1] = L_1([x_0, P, E_0])    eqs. (4)-(6)  prompts enter block 0, carry on
    deep:    [x_i, _, E_i]   = L_i([x_{i-1}, P_{i-1}, E_{i-1}])   eqs. (7)-(8)  replaced per block
    y               = Head(pool(norm(x_N ...)))      eq. (3)

``forward_blocks`` is the one loop over the blocks, for training and inference alike. Where
prompts enter a block it either inserts them and runs timm's ``Block`` (the token path, the
equations above), or, for VPT-deep while training, lets them act only as keys and values (the
exact prefix path, ``vx.prefix``); ``block_path`` chooses once per forward. ``PrefixViT``,
``MultiTaskVPT``, ``FrozenPrefix`` and the prompt ensemble run the same loop with their own
prompts (``prompts_for_block`` or a ``prompts_of`` function).

Nothing of the ViT is copied or subclassed: ``self.vit`` is the timm model, frozen with
``requires_grad_(False)`` and kept in eval mode while prompts train.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError, PromptFileError, bad_choice
from . import checks, prompt_init, report
from .frozen import FrozenBackboneModel, new_head
from .prefix import check_prefix_exact, prefix_block, prefix_path_exact
from .prompt_init import PROMPT_PARAMS
from .tokens import add_prompts, embed_patches, insert_prompts, split_tokens

PATHS = ("auto", "token", "prefix")
# block i's prompts for a batch of B: tokens (1 or B, p, D), cached (K, V), or None
PromptsOf = Callable[[int, int], Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], None]]


class PromptedViT(FrozenBackboneModel):
    """A frozen timm ViT plus learnable prompts and a linear head.

    ``method`` names the transfer method it was built as (``make_model`` sets it; the registry's
    ``MethodSpec`` of that name holds its optimiser, default lr and evaluation path): "vpt" for a
    PromptedViT built directly.

    Args:
        vit: a timm ``VisionTransformer`` (shared, not copied; its weights are frozen).
        cfg: the prompt setup; defaults to ``PromptConfig()`` (VPT-deep, p=10).
        num_classes: size of the new linear head; ``None`` copies the backbone's own head.
        init_data: a Dataset or DataLoader of (image, label), needed for ``cfg.init == "cls"``.
        freeze: freeze the backbone (the VPT setting). Baselines that tune it pass False.
        seed: seed for the prompt initialisation (``None``: torch's global generator).
        path: how prompted blocks run: ``"auto"`` (the exact prefix path while training where it
            applies, else the token path), ``"token"`` or ``"prefix"``; see ``block_path``.
    """

    BACKBONE = "vit"   # FrozenBackboneModel: train() keeps a fully frozen self.vit in eval mode
    method = "vpt"

    def __init__(self, vit: nn.Module, cfg: Optional[PromptConfig] = None,
                 num_classes: Optional[int] = None, *, init_data=None, freeze: bool = True,
                 seed: Optional[int] = None, path: str = "auto"):
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
        if path not in PATHS:
            raise bad_choice("path", path, PATHS)
        self._path = path
        self._prefix_exact: Optional[bool] = None  # cached by block_path
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
        if path == "prefix":
            check_prefix_exact(self)  # raises ConfigError naming what makes it inexact

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
        """The (p, D) prompt tokens of block ``i`` as parameters (no dropout), or None.

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

    def prompts_for_block(self, i: int, B: int) -> Optional[torch.Tensor]:
        """The prompts that enter block ``i`` for a batch of B images, or None: the one hook.

        (1, p, D) shared by the batch, or (B, p, D) with one prompt-dropout draw per image while
        dropout is active. Subclasses override it (``PromptEnsemble`` gives each copy of the batch
        its member's prompts); ``forward_blocks`` takes another through ``prompts_of``.
        """
        P = self.layer_prompts(i)
        if P is None:
            return None
        if self.prompt_dropout.p > 0 and self.training:
            return self.prompt_dropout(P.unsqueeze(0).expand(B, -1, -1))  # (B, p, D)
        return P.unsqueeze(0)                                               # (1, p, D)

    def insert(self, x: torch.Tensor, P: torch.Tensor, n_old: int) -> tuple[torch.Tensor, int]:
        """Eqs. (5)/(7): x (B, R+n_old+m, D) with its n_old prompts replaced by P (1 or B, p, D).

        Returns the new sequence (B, R+p+m, D) and p; location "add" adds P to the patch
        embeddings instead and returns (B, R+m, D) and 0.
        """
        P = P.expand(x.shape[0], -1, -1)
        if self.cfg.location == "add":                                     # same length, element-wise
            return add_prompts(x, P, self.num_prefix)
        return insert_prompts(x, P, self.num_prefix, n_old, self.prompt_slot)  # (B, R+p+m, D)

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
        x = embed_patches(vit, x)                                   # (B, R+m, D): _pos_embed, norm_pre
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

    def forward_blocks(self, x: torch.Tensor, *, start: int = 0, prompts_of: Optional[PromptsOf] = None,
                       path: Optional[str] = None, cls_only: bool = False) -> tuple[torch.Tensor, int]:
        """The transformer layers L_start..L_N on tokens x (B, R+m, D): the one block loop.

        A block without prompts is timm's ``Block`` (eq. 2). Where prompts enter, the step is the
        one chosen for this forward (``path``, default ``self.block_path()``):

        * ``"token"``: eqs. (5)/(7), insert the prompts (shallow: once; deep: replacing the
          previous block's) and run the ``Block`` on [x, P];
        * ``"prefix"``: the prompts act only as keys and values of the image tokens' attention
          (``vx.prefix.prefix_block``): the same outputs for the image tokens, and the prompt
          tokens' own query, attention output and MLP are never computed.

        Args:
            x: embedded tokens (B, R+m, D) from ``embed``, or the output of block ``start - 1``.
            start: the first block to run (``FrozenPrefix`` caches blocks 0..start-1).
            prompts_of: ``f(i, B)`` -> block i's prompts: tokens (1 or B, p, D), or, on the prefix
                path, cached (K, V) each (1 or B, H, p, hd); None for no prompts. Default
                ``self.prompts_for_block``.
            path: ``"token"`` or ``"prefix"`` for this forward.
            cls_only: the head reads only [CLS]; on the prefix path the last block then computes
                [CLS]'s output alone (all tokens still offer keys and values).

        Returns:
            The tokens after the last block, (B, R+p+m, D) (token path; (B, R+m, D) on the prefix
            path, (B, 1, D) with ``cls_only``), and the number p of prompt tokens in them.
        """
        prompts_of = prompts_of or self.prompts_for_block
        path = path or self.block_path()
        last, n_p = self.depth - 1, 0
        for i, blk in enumerate(self.vit.blocks):
            if i < start:
                continue
            P = prompts_of(i, x.shape[0])                      # (1 or B, p, D), (K, V) or None
            if P is None:
                x = blk(x)                                     # eq. (2): a plain block
            elif path == "prefix":                             # prompts as keys/values only
                x = prefix_block(blk, x, P, queries=1 if cls_only and i == last else None)
            else:
                x, n_p = self.insert(x, P, n_p)                # eqs. (5)/(7): (B, R+p+m, D)
                x = blk(x)
        return x, n_p

    def forward_tokens(self, images: torch.Tensor, *, cls_only: bool = False) -> tuple[torch.Tensor, int]:
        """All final tokens after ``norm`` and the number p of prompt tokens among them.

        (B, R+p+m, D) on the token path; on the prefix path (training VPT-deep, see
        ``block_path``) the image tokens only, (B, R+m, D), or (B, 1, D) with ``cls_only``.
        """
        self.check_images(images)
        x = self.embed(images)                                 # (B, R+m, D), eq. (1)
        x, n_p = self.forward_blocks(x, cls_only=cls_only)
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
        """Pooled features before the head: ``forward_tokens`` -> ``pool`` -> ``fc_norm``, (B, D)."""
        x, n_p = self.forward_tokens(images, cls_only=self.cfg.pool == "cls")
        return self.vit.fc_norm(self.pool(x, n_p))

    # ----------------------------------------------------------------- which path
    @property
    def path(self) -> str:
        """``"auto"``, ``"token"`` or ``"prefix"``, fixed at construction (see ``block_path``)."""
        return self._path

    def block_path(self) -> str:
        """The step ``forward_blocks`` takes where prompts enter in this forward: "token" or "prefix".

        ``path="token"``: always the token path. ``path="prefix"``: always the prefix path (checked
        exact at construction). ``path="auto"``: the prefix path while training a setup where it is
        exact (``vx.prefix.check_prefix_exact``: deep or a run of blocks to the last, token prompts,
        pool "cls" or "image") unless a training backbone uses attention dropout or something hooks
        the blocks (probes and attributions must see the prompt tokens); the token path otherwise,
        and always in eval mode.
        """
        if not self.prompt_blocks or self._path == "token":
            return "token"
        if self._path == "prefix":
            return "prefix"
        if not self.training:
            return "token"
        if self._prefix_exact is None:  # depends only on cfg, the blocks and timm: check once
            self._prefix_exact = prefix_path_exact(self)
        if not self._prefix_exact:
            return "token"
        if self.vit.training and any(blk.attn.attn_drop.p > 0 for blk in self.vit.blocks):
            return "token"  # the prefix attention has no attention dropout
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in self.vit.blocks.modules())
        return "token" if hooked else "prefix"

    def uses_prefix_path(self) -> bool:
        """True when a forward now goes through the exact prefix path (``block_path() == "prefix"``)."""
        return self.block_path() == "prefix"

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """Eq. (3): y = Head(x_N) on pooled features (B, D) -> (B, num_classes)."""
        return self.head(self.vit.head_drop(feats))

    def as_prefix(self):
        """The exact VPT-prefix inference path (cached per-block K/V): a ``vx.prefix.PrefixViT``."""
        from .prefix import PrefixViT
        return PrefixViT(self)

    # ----------------------------------------------------------------- reports
    group_of = staticmethod(report.group_of)  # prompts, head, cls, backbone, adapter (model.report)

    # ----------------------------------------------------------------- files
    def save_prompts(self, path) -> "object":
        """Save only what this model trained (safetensors + config + backbone fingerprint)."""
        from .prompt_file import save_prompts
        return save_prompts(self, path)

    @classmethod
    def load_prompts(cls, path, vit: nn.Module, *, check_fingerprint: bool = True) -> "PromptedViT":
        """Rebuild a saved PromptedViT (linear, VPT-shallow, VPT-deep or one built directly) on
        ``vit``, in eval mode; fails clearly if the file belongs to another backbone. Files of the
        methods that add modules or tune the backbone load with ``vx.load_model``."""
        from .prompt_file import load_trained, read_for
        state, meta, cfg, num_classes, _ = read_for(path, vit)
        try:
            model = cls(vit, cfg.replace(init="random") if cfg.init == "cls" else cfg, num_classes)
        except ConfigError as e:
            raise PromptFileError(f"{str(path)!r} has metadata this version cannot rebuild: {e}") from None
        model.cfg, model.method = cfg, meta["method"]
        try:
            return load_trained(model, state, meta, path, check_fingerprint)
        except PromptFileError as e:
            if meta["method"] == "vpt":
                raise
            raise PromptFileError(f"{e}. The file holds a {meta['method']!r} model; vx.load_model(path, "
                                  f"vit) rebuilds any method") from None

    def extra_repr(self) -> str:
        return f"cfg={self.cfg.short_name()}, blocks={list(self.prompt_blocks)}"
