"""VPT-prefix: VPT-deep prompts as cached key/value rows, exact at inference (paper App., Fig. 18-19).

In VPT-deep (eqs. 7-8) the prompts fed at block i are thrown away after that block: their outputs
are replaced by the next block's fresh prompts. So the only thing P_i ever does is to offer keys and
values to the image tokens' queries inside block i's self-attention::

    K_i = W_k LN_1(P_i),  V_i = W_v LN_1(P_i)                 computed once, cached (1, H, p, hd)
    x  <- x + LS_1(Proj(softmax(Q_x [K_i; K_x]^T / sqrt(hd)) [V_i; V_x]))
    x  <- x + LS_2(MLP(LN_2(x)))                               image tokens only

The prompt tokens never go through the query projection, the attention output or the MLP, so each
prompted block does the work of a plain block on R+m tokens plus p extra key/value rows: latency and
memory stay close to the frozen backbone's however large p is.

This is exact (same logits as the token path, up to float rounding) only when no prompt *output*
is ever used: the prompted blocks must be a contiguous run ending at the last block (``"deep"`` or
e.g. ``(3, 4, 5)`` in a 6-block ViT), the prompts must be tokens (``location`` ``"prepend"`` or
``"prepend-pixel"``) and the head must not read prompt outputs (``pool`` ``"cls"`` or ``"image"``).
Everything else raises ``ConfigError``. ``PrefixViT`` is inference only: it refuses a model in
training mode (prompt dropout and the backbone's dropout would make the two paths differ).

Training uses the same math without the cache: in training mode ``PromptedViT.forward_blocks``
takes the prefix step (``prefix_block`` on the live prompts, with gradients, one dropout draw per
image) wherever this is exact, so a VPT-deep step skips the prompt tokens' queries, attention
outputs and MLPs too (``PromptedViT.block_path``). ``PrefixViT`` runs the same loop on cached K/V.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["PrefixViT", "check_prefix_exact", "prompt_kv", "prompt_kv_table", "prefix_block"]


# ----------------------------------------------------------------- exactness checks
# What the prefix path reads of a timm ``Attention`` in every timm release it supports. Newer
# releases add optional parts, read with getattr: ``norm`` (scale_norm), ``gate`` (gated attention,
# 1.0.28+); ``attn_dim`` (1.0.23+) is always num_heads * head_dim, so it is never read.
ATTENTION_PARTS = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "attn_drop", "proj",
                   "proj_drop")


def missing_attention_parts(model: nn.Module) -> list:
    """Names in ``ATTENTION_PARTS`` that the prompted blocks' attention lacks (empty: all there)."""
    return sorted({n for i in model.prompt_blocks for n in ATTENTION_PARTS
                   if not hasattr(model.vit.blocks[i].attn, n)})


def _check_block(blk: nn.Module, i: int) -> None:
    """Refuse a block whose forward is not timm's plain pre-norm ``Block`` with ``Attention``."""
    from timm.models.vision_transformer import Attention, Block  # Attention's home moved (1.0.16)

    if type(blk).forward is not Block.forward:
        raise ConfigError(
            f"block {i} is a {type(blk).__name__}, not timm's pre-norm vision_transformer.Block; the "
            f"prefix path re-implements only that block's forward. Use the token path (the "
            f"PromptedViT itself)"
        )
    if type(blk.attn).forward is not Attention.forward:
        raise ConfigError(
            f"block {i}'s attention is a {type(blk.attn).__name__}, not timm.layers.Attention (e.g. "
            f"rotary embeddings); the prefix path cannot reproduce it. Use the token path"
        )


def check_prefix_exact(model: nn.Module) -> None:
    """Raise ``ConfigError`` unless the prefix path gives exactly the token path's logits.

    Args:
        model: a ``PromptedViT``.

    Raises:
        ConfigError: naming the field (``location``, ``layers``, ``pool``) or the block type that
            makes the prefix path inexact, and what to use instead.
    """
    cfg, blocks, N = model.cfg, tuple(model.prompt_blocks), model.depth
    if cfg.length > 0 and cfg.location not in ("prepend", "prepend-pixel"):
        raise ConfigError(
            f"location={cfg.location!r} has no prompt tokens that act only as keys/values "
            f"('add' changes the patch embeddings, 'concat-channel' the input pixels), so the prefix "
            f"path is not exact; use location='prepend' (or 'prepend-pixel'), or run the PromptedViT"
        )
    if blocks and blocks != tuple(range(blocks[0], N)):
        carried = [i for i in range(blocks[0] + 1, N) if i not in blocks]
        raise ConfigError(
            f"layers={cfg.layers!r} (prompted blocks {list(blocks)} of {N}) is not exact on the "
            f"prefix path: block(s) {carried} receive no fresh prompts, so earlier prompts' outputs "
            f"pass through their queries and MLPs. Use layers='deep' or a contiguous run to the last "
            f"block such as {tuple(range(blocks[0], N))}, or run the PromptedViT (token path)"
        )
    if cfg.length > 0 and cfg.pool not in ("cls", "image"):
        raise ConfigError(
            f"pool={cfg.pool!r} reads the prompt tokens' outputs, which the prefix path never "
            f"computes; use pool='cls' or 'image', or run the PromptedViT"
        )
    for i in blocks:
        _check_block(model.vit.blocks[i], i)
    missing = missing_attention_parts(model)
    if missing:
        raise ConfigError(f"this timm's Attention has no {', '.join(missing)}; the prefix path "
                          f"cannot follow it. Use the token path (the PromptedViT itself)")


def _check_eval(model: nn.Module) -> None:
    if model.training or model.vit.training:
        raise ConfigError(
            "the prefix path is inference-only (no prompt dropout, no backbone dropout/drop-path), "
            "but the model is in training mode; call model.eval() first"
        )


# ----------------------------------------------------------------- the math, one block
def prompt_kv(blk: nn.Module, prompts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """K_i = k_norm(W_k LN_1(P_i)) and V_i = W_v LN_1(P_i) for one block.

    Args:
        blk: a timm ``Block``.
        prompts: the (p, D) tokens fed at this block (``model.layer_prompts(i)``), or a batch of
            them (S, p, D), e.g. one dropout draw per image while training.

    Returns:
        (K, V), each (H, p, hd), or (S, H, p, hd) for batched prompts.
    """
    attn = blk.attn
    qkv = attn.qkv(blk.norm1(prompts))                               # (..., p, 3*H*hd)
    qkv = qkv.unflatten(-1, (3, attn.num_heads, attn.head_dim))      # (..., p, 3, H, hd)
    k = qkv.select(-3, 1).transpose(-3, -2)                          # (..., H, p, hd)
    v = qkv.select(-3, 2).transpose(-3, -2)                          # (..., H, p, hd)
    return attn.k_norm(k), v


def prompt_kv_table(model: nn.Module) -> torch.Tensor:
    """All cached rows of a ``PromptedViT``: (L, 2, H, p, hd), one row per prompted block, K then V."""
    attn = model.vit.blocks[0].attn
    rows = [torch.stack(prompt_kv(model.vit.blocks[i], model.layer_prompts(i)))
            for i in model.prompt_blocks]                            # L x (2, H, p, hd)
    if not rows:
        ref = model.vit.cls_token if getattr(model.vit, "cls_token", None) is not None \
            else model.vit.blocks[0].norm1.weight
        return ref.new_zeros(0, 2, attn.num_heads, 0, attn.head_dim)
    return torch.stack(rows)                                         # (L, 2, H, p, hd)


def prefix_attention(attn: nn.Module, x: torch.Tensor, k_p: torch.Tensor,
                     v_p: torch.Tensor, queries: Optional[int] = None) -> torch.Tensor:
    """timm ``Attention`` for the image tokens, with p cached key/value rows in front.

    Args:
        attn: a timm ``Attention``.
        x: normalised image tokens (B, N, D), N = R + m.
        k_p, v_p: cached prompt keys/values, (1 or B, H, p, hd).
        queries: only the first ``queries`` tokens ask (e.g. 1: just [CLS]); None: all N.

    Returns:
        (B, n, D): the attention output of the first n = ``queries`` (or N) image tokens.
    """
    B, N, _ = x.shape
    n = N if queries is None else queries
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim)   # (B, N, 3, H, hd)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                      # each (B, H, N, hd)
    q, k = attn.q_norm(q[:, :, :n]), attn.k_norm(k)                     # q (B, H, n, hd)
    k = torch.cat([k_p.to(k.dtype).expand(B, -1, -1, -1), k], dim=2)    # (B, H, p+N, hd)
    v = torch.cat([v_p.to(v.dtype).expand(B, -1, -1, -1), v], dim=2)    # (B, H, p+N, hd)
    return _attend(attn, x[:, :n], q, k, v)


def prefix_attention_live(attn: nn.Module, x: torch.Tensor, p_tokens: torch.Tensor,
                          queries: Optional[int] = None) -> torch.Tensor:
    """Training form of ``prefix_attention``: the normalised prompt tokens (1 or B, p, D) enter the
    qkv projection once, in front of the image tokens x (B, N, D); their queries are dropped.

    K and V are views of that one projection, as in timm's own ``Attention``, so no per-block copy of
    the keys and values is kept for the backward pass (the cached form concatenates K/V instead).

    Returns:
        (B, n, D): the attention output of the first n = ``queries`` (or N) image tokens.
    """
    B, N, _ = x.shape
    p = p_tokens.shape[1]
    n = N if queries is None else queries
    seq = torch.cat([p_tokens.expand(B, -1, -1), x], dim=1)            # (B, p+N, D)
    qkv = attn.qkv(seq).reshape(B, p + N, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                      # each (B, H, p+N, hd)
    q, k = attn.q_norm(q[:, :, p:p + n]), attn.k_norm(k)                # q (B, H, n, hd): images only
    return _attend(attn, x[:, :n], q, k, v)


def _attend(attn: nn.Module, x_q: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
            v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v, then timm's output norm, gate and projection: (B, n, D)."""
    B, n = x_q.shape[:2]
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)     # (B, H, n, hd)
    out = out.transpose(1, 2).reshape(B, n, attn.num_heads * attn.head_dim)  # (B, n, H*hd)
    norm, gate = getattr(attn, "norm", None), getattr(attn, "gate", None)  # newer timm only
    if norm is not None:                                                # scale_norm (or identity)
        out = norm(out)
    if gate is not None:                                                # gated attention
        out = out * gate(x_q).sigmoid()
    return attn.proj_drop(attn.proj(out))


def prefix_block(blk: nn.Module, x: torch.Tensor,
                 prompts: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                 queries: Optional[int] = None) -> torch.Tensor:
    """One timm ``Block`` on the image tokens x (B, N, D) with the prompts as keys/values only.

    Args:
        blk: a timm ``Block``.
        x: image tokens (B, N, D), N = R + m.
        prompts: the prompt tokens (1 or B, p, D) with gradients (training), or their cached
            (K, V), each (1 or B, H, p, hd) (``prompt_kv``).
        queries: only the first ``queries`` tokens' outputs are computed (1: [CLS] alone);
            None: all N. The others still offer keys and values.

    Returns:
        (B, N, D), or (B, queries, D).
    """
    h = blk.norm1(x)                                                    # (B, N, D)
    x = x if queries is None else x[:, :queries]                        # (B, n, D) rows we output
    attn = prefix_attention(blk.attn, h, *prompts, queries) if isinstance(prompts, tuple) else \
        prefix_attention_live(blk.attn, h, blk.norm1(prompts), queries)
    x = x + blk.drop_path1(blk.ls1(attn))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x


def prefix_path_exact(model: nn.Module) -> bool:
    """``check_prefix_exact`` as a bool, with one warning when the installed timm, not the setup,
    keeps training off the prefix path (``PromptedViT.block_path`` asks once per model)."""
    try:
        check_prefix_exact(model)
        return True
    except ConfigError:
        missing = missing_attention_parts(model)
        if missing:
            import timm
            warnings.warn(f"timm {timm.__version__}: Attention has no {', '.join(missing)}; VPT-deep "
                          f"trains on the token path (same results, slower)", stacklevel=3)
        return False


# ----------------------------------------------------------------- cache staleness
def _weights_key(model: nn.Module, blocks) -> tuple:
    """(storage, version) of every backbone weight the cached rows of ``blocks`` are computed from."""
    mods = [m for i in blocks for m in (model.vit.blocks[i].norm1, model.vit.blocks[i].attn)]
    if hasattr(model, "pixel_prompts"):
        mods.append(model.vit.patch_embed)
    return tuple((t.data_ptr(), t._version) for m in mods for t in m.parameters())


def _prompt_tensors(model: nn.Module) -> list:
    return [getattr(model, n) for n in ("prompts", "pixel_prompts") if hasattr(model, n)]


def kv_sources(model: nn.Module, blocks) -> tuple:
    """What cached K/V rows of a PromptedViT were computed from: a copy of its prompts (compared by
    value later) and the (storage, version) of the backbone weights they read (norm1, qkv, k_norm
    of ``blocks``, the patch embedding for pixel prompts)."""
    return [t.detach().clone() for t in _prompt_tensors(model)], _weights_key(model, blocks)


def kv_sources_changed(seen: tuple, model: nn.Module, blocks) -> bool:
    """True when ``model``'s prompts or weights differ from ``seen`` (a ``kv_sources`` result)."""
    prompts, key = seen
    now = _prompt_tensors(model)
    return key != _weights_key(model, blocks) or len(now) != len(prompts) or \
        any(a.shape != b.shape or not torch.equal(a.detach(), b) for a, b in zip(now, prompts))


# ----------------------------------------------------------------- the module
class PrefixViT(nn.Module):
    """Inference-only VPT-deep with prompts turned into cached key/value rows (exact).

    Build it with ``model.eval().as_prefix()``. It shares the ``PromptedViT`` (backbone, prompts,
    head); only the per-block K/V rows are its own, in the non-persistent buffer ``kv`` of shape
    (L, 2, H, p, hd). Every forward first checks that the cache still matches: the prompts are
    compared by value with a copy taken at the last refresh, the weights the K/V rows read (norm1,
    qkv, k_norm of the prompted blocks, the patch embedding for pixel prompts) by storage and
    version counter; if anything changed, the rows are recomputed (``refresh()``) before use.

    Args:
        model: a ``PromptedViT`` in eval mode whose setup passes ``check_prefix_exact``.

    Raises:
        ConfigError: for a setup where the prefix path is not exact, or a model in training mode.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_prefix_exact(model)
        _check_eval(model)
        self.model = model
        self.blocks = tuple(model.prompt_blocks)
        self._row = {b: j for j, b in enumerate(self.blocks)}
        self.register_buffer("kv", torch.empty(0), persistent=False)
        self.refresh()
        self.train(False)

    @torch.no_grad()
    def refresh(self) -> "PrefixViT":
        """Recompute the cached K/V rows from the current prompts and backbone weights."""
        self.kv = prompt_kv_table(self.model).detach()              # (L, 2, H, p, hd)
        self._seen = kv_sources(self.model, self.blocks)
        return self

    def is_stale(self) -> bool:
        """True when the prompts or the weights behind the cached K/V rows changed since ``refresh``."""
        return kv_sources_changed(self._seen, self.model, self.blocks)

    @property
    def head(self) -> nn.Module:
        """The wrapped model's classifier."""
        return self.model.head

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Final image tokens after ``norm``: (B, R+m, D) (no prompt tokens anywhere)."""
        _check_eval(self.model)
        self.model.check_images(images)
        if self.is_stale():                                          # prompts trained or edited since
            self.refresh()
        x = self.model.embed(images)                                 # (B, R+m, D), eq. (1)

        def cached(i, B):                                            # K, V (1, H, p, hd) or None
            j = self._row.get(i)
            return None if j is None else (self.kv[j, 0:1], self.kv[j, 1:2])
        x, _ = self.model.forward_blocks(x, prompts_of=cached, path="prefix")
        return self.model.vit.norm(x)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head (B, D): [CLS] or mean of the patch tokens (Fig. 8)."""
        x = self.forward_tokens(images)
        return self.model.vit.fc_norm(self.model.pool(x, 0))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """Eq. (3) on pooled features (B, D) -> (B, num_classes)."""
        return self.model.forward_head(feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def extra_repr(self) -> str:
        L, _, H, p, hd = self.kv.shape
        return f"prefix blocks={list(self.blocks)}, cached K/V (L={L}, 2, H={H}, p={p}, hd={hd})"

