"""``PromptedSwin``: Visual Prompt Tuning around a frozen timm ``SwinTransformer`` (paper Sec. 4.2, App. A).

Swin has no global token sequence: every block attends inside local windows of the (B, H, W, C)
feature map, and patch merging halves the map between stages. The paper's recipe, as built here:

* the p prompt tokens are prepended **inside every local window**: a window of ``Wa = ws * ws``
  tokens attends over ``p + Wa`` tokens. Prompts carry no position: the relative-position bias
  and the shifted-window mask get zero rows and columns for them, so every token of a window
  (whatever shifted region it came from) sees the prompts, and the prompts see every token;
* prompts **take no part in patch merging**: they are dropped at the end of each stage;
* ``layers="shallow"``: p prompts enter the first block of the first stage and carry on through
  that stage's blocks (each block's prompt outputs are averaged over the windows of an image, then
  go through the block's residual MLP like any token); ``"deep"``: fresh prompts (p, C_stage) at
  every block, their outputs discarded (eqs. 7-8 per block); a tuple of flat block indices gives
  fresh prompts there, carried to the end of that stage.

Nothing of timm is copied or subclassed: each block runs timm's own ``SwinTransformerBlock.forward``
(cyclic shift, padding, window partition, W-MSA/SW-MSA, reverse), with two forward hooks on its
``WindowAttention`` for the duration of the call: a pre-hook that prepends the prompts to each
window and pads the mask, and a hook that splits the prompt rows off the output. The relative
position bias is padded the same way by wrapping ``attn._get_rel_pos_bias`` (private timm API,
as ``_pos_embed`` is for the ViT). With no prompts at a block, the block runs untouched, so
``length=0`` reproduces the backbone's logits exactly.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError
from .frozen import FrozenBackboneModel, new_head
from .prompt_init import xavier_uniform_bound


def is_swin(model: nn.Module) -> bool:
    """True for a timm ``SwinTransformer`` (stages in ``layers``, window-attention blocks)."""
    from timm.models.swin_transformer import SwinTransformer
    return isinstance(model, SwinTransformer)


def swin_blocks(swin: nn.Module) -> List[Tuple[int, nn.Module]]:
    """Every block of the backbone as (stage index, block), in forward order (flat block indices)."""
    return [(s, blk) for s, stage in enumerate(swin.layers) for blk in stage.blocks]


def swin_prompt_count(swin: nn.Module, length: int, layers="deep") -> int:
    """Prompt parameters of VPT on a Swin: ``p * sum(C_stage(b))`` over the prompted blocks b.

    Swin-B (depths 2-2-18-2, widths 128-256-512-1024): shallow ``128 p``, deep
    ``p (2*128 + 2*256 + 18*512 + 2*1024) = 12,032 p`` (601,600 for p = 50).
    """
    blocks = swin_blocks(swin)
    chosen = PromptConfig(length=length, layers=layers).block_indices(len(blocks)) if length else ()
    return sum(length * blocks[i][1].dim for i in chosen)


def check_swin_config(cfg: PromptConfig) -> None:
    """Refuse a PromptConfig field a Swin cannot honour, naming the field, the value and what works."""
    allowed = {"location": ("prepend",), "share": ("none",), "pool": ("image",), "init": ("random",)}
    why = {"location": "Swin prompts are tokens prepended inside each window",
           "share": "stages have different widths, so prompt sets cannot be shared",
           "pool": "Swin has no [CLS] token; its head averages the image tokens",
           "init": "there is no [CLS] embedding to take class means of"}
    for field, ok in allowed.items():
        value = getattr(cfg, field)
        if value not in ok:
            raise ConfigError(f"{field}={value!r} is not allowed for a SwinTransformer ({why[field]}); "
                              f"use {field}={ok[0]!r}")
    if cfg.learn_cls:
        raise ConfigError("learn_cls=True needs a [CLS] token; a SwinTransformer has none (use learn_cls=False)")


class PromptedSwin(FrozenBackboneModel):
    """A frozen timm SwinTransformer plus window prompts and a linear head (paper Sec. 4.2).

    Args:
        swin: a timm ``SwinTransformer`` (shared, not copied; frozen).
        cfg: the prompt setup (``location="prepend"``, ``pool="image"``, ``share="none"``).
        num_classes: size of the new linear head; ``None`` copies the backbone's own head.
        freeze: freeze the backbone (the VPT setting).
        seed: seed for the prompt initialisation.
    """

    BACKBONE = "swin"
    GROUPS = {"head": "head", "prompts": "prompts"}

    def __init__(self, swin: nn.Module, cfg: Optional[PromptConfig] = None, num_classes: Optional[int] = None,
                 *, freeze: bool = True, seed: Optional[int] = None):
        super().__init__()
        if not is_swin(swin):
            raise ConfigError(f"backbone {type(swin).__name__} is not a timm SwinTransformer")
        cfg = cfg if cfg is not None else PromptConfig(pool="image")
        if not isinstance(cfg, PromptConfig):
            raise ConfigError(f"cfg={cfg!r} must be a vx.PromptConfig")
        check_swin_config(cfg)
        self.swin, self.cfg = swin, cfg
        self.swin_blocks = swin_blocks(swin)
        self.depth = len(self.swin_blocks)
        self.embed_dim = swin.num_features            # width of the pooled features (the head input)
        self.prompt_blocks = cfg.block_indices(self.depth) if cfg.length > 0 else ()
        if freeze:
            swin.requires_grad_(False)
        self.head, self.num_classes = new_head(swin.head.fc, self.embed_dim, num_classes,
                                               getattr(swin, "num_classes", None))
        self.prompt_dropout = nn.Dropout(cfg.dropout)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ph, pw = swin.patch_embed.patch_size
        in_chans = swin.patch_embed.proj.in_channels
        sets = []
        for i in self.prompt_blocks:  # uniform(-v, v), v = sqrt(6 / (C ph pw + C_stage)): Sec. 4.1 init
            C = self.swin_blocks[i][1].dim
            v = xavier_uniform_bound(in_chans * ph * pw, C)
            sets.append(nn.Parameter((torch.rand(cfg.length, C, generator=gen) * 2 - 1) * v))
        self.prompts = nn.ParameterList(sets)         # one (p, C_stage) set per prompted block
        if cfg.fixed:
            self.prompts.requires_grad_(False)

    # ----------------------------------------------------------------- prompts
    def layer_prompts(self, i: int) -> Optional[torch.Tensor]:
        """The (p, C_stage) prompts fed at the input of flat block ``i``, or None."""
        return self.prompts[self.prompt_blocks.index(i)] if i in self.prompt_blocks else None

    def carries(self, i: int) -> bool:
        """True when block ``i`` holds prompts whose outputs are read later (the next block is in the
        same stage and gets no fresh prompts): only then are they computed (window mean, MLP)."""
        stage = self.swin_blocks[i][0]
        holds = any(j <= i and self.swin_blocks[j][0] == stage for j in self.prompt_blocks)
        nxt = i + 1
        return holds and nxt < self.depth and self.swin_blocks[nxt][0] == stage and nxt not in self.prompt_blocks

    # ----------------------------------------------------------------- forward
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head: (B, num_features), following timm's ``forward_features``."""
        x = self.swin.patch_embed(images)                               # (B, H, W, C)
        P, flat = None, 0
        for stage in self.swin.layers:
            x = stage.downsample(x)                                     # patch merging: no prompts
            P = None                                                    # dropped at the stage end
            for blk in stage.blocks:
                fresh = self.layer_prompts(flat)
                if fresh is not None:                                   # (p, C) -> (B, p, C)
                    P = self.prompt_dropout(fresh.unsqueeze(0).expand(x.shape[0], -1, -1))
                x, P = self.block(blk, x, P, keep=self.carries(flat))
                flat += 1
        x = self.swin.norm(x)                                           # (B, H, W, C_last)
        return self.swin.forward_head(x, pre_logits=True)               # (B, C_last): average pool

    def block(self, blk: nn.Module, x: torch.Tensor, P: Optional[torch.Tensor],
              keep: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One Swin block on x (B, H, W, C) with prompts P (B, p, C) in every window.

        Returns the block output and, when ``keep``, the prompts' outputs: their attention output
        averaged over the image's windows, then the block's residual MLP (``x + MLP(LN_2(x))``).
        """
        if P is None:
            return blk(x), None
        box: Dict[str, torch.Tensor] = {}
        with window_prompts(blk.attn, blk.norm1(P), box):
            x = blk(x)                                                  # timm's own forward
        if not keep:
            return x, None
        B, p, C = P.shape
        attn_out = box["prompts"].view(B, -1, p, C).mean(dim=1)         # (B, nW, p, C) -> (B, p, C)
        P = P + blk.drop_path1(attn_out)
        P = P + blk.drop_path2(blk.mlp(blk.norm2(P)))
        return x, P

    def extra_repr(self) -> str:
        return f"cfg={self.cfg.short_name()}, blocks={list(self.prompt_blocks)}"


@contextlib.contextmanager
def window_prompts(attn: nn.Module, P: torch.Tensor, box: Dict[str, torch.Tensor]) -> Iterator[None]:
    """Run ``attn`` (a timm ``WindowAttention``) with the prompts P (B, p, C) prepended to every window.

    Inside the context each call gets windows (B*nW, Wa, C) and attends over (B*nW, p+Wa, C): the
    relative-position bias and the shift mask (nW, Wa, Wa) are padded with zeros for the p prompt
    rows and columns, so prompts see and are seen by every token of the window. The image rows of
    the output go back to timm's block; the prompt rows (B*nW, p, C) are left in ``box["prompts"]``.
    """
    p = P.shape[1]
    bias = attn._get_rel_pos_bias                                       # bound method of the class

    def pre(module, args, kwargs):
        (windows,) = args                                               # (B*nW, Wa, C)
        nW = windows.shape[0] // P.shape[0]
        prompts = P.repeat_interleave(nW, dim=0)                        # (B*nW, p, C): batch-major
        mask = kwargs.get("mask")
        if mask is not None:
            kwargs = dict(kwargs, mask=F.pad(mask, (p, 0, p, 0)))       # (nW, p+Wa, p+Wa)
        return (torch.cat([prompts, windows], dim=1),), kwargs          # (B*nW, p+Wa, C)

    def post(module, args, kwargs, out):
        box["prompts"] = out[:, :p]                                     # (B*nW, p, C)
        return out[:, p:]                                               # (B*nW, Wa, C)

    handles = [attn.register_forward_pre_hook(pre, with_kwargs=True),
               attn.register_forward_hook(post, with_kwargs=True)]
    attn._get_rel_pos_bias = lambda: F.pad(bias(), (p, 0, p, 0))       # (1, nH, p+Wa, p+Wa)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        del attn._get_rel_pos_bias                                      # the class method again
