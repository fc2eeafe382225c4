"""The ViT of the paper's Sec. 3.1 written out as plain tensor functions (eqs. 1-8).

Every function reads the weights of a real timm ``VisionTransformer`` (or one of its ``Block``s)
and redoes its computation with explicit tensor operations, so a notebook can put each equation
next to the code and check it against timm::

    x_0, E_0 = Embed(I)                                     eq. (1)   embed
    [x_i, E_i] = L_i([x_{i-1}, E_{i-1}])                    eq. (2)   block (attention, mlp)
    y = Head(x_N)                                           eq. (3)   head
    [x_1, Z_1, E_1] = L_1([x_0, P, E_0]) ...                eqs. (4)-(6)  shallow_forward
    [x_i, _, E_i] = L_i([x_{i-1}, P_{i-1}, E_{i-1}])        eqs. (7)-(8)  deep_forward

Token layout: ``R`` prefix tokens ([CLS] plus register tokens), then ``p`` prompts (if any), then
the ``m`` patch embeddings. Nothing here is used for training; ``PromptedViT`` is the real model.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError

Prompts = Union[torch.Tensor, Sequence[torch.Tensor]]


def layer_norm(ln: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LN(x) = (x - mean) / sqrt(var + eps) * weight + bias over the last dim (Identity passes x)."""
    if isinstance(ln, nn.Identity):
        return x
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    out = (x - mean) / torch.sqrt(var + ln.eps)
    if ln.weight is not None:
        out = out * ln.weight
    return out + ln.bias if ln.bias is not None else out


def _scale(ls: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer-scale: x * gamma per channel (timm ``LayerScale``), or x for an Identity."""
    return x * ls.gamma if hasattr(ls, "gamma") else x


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut images into non-overlapping flattened patches, the I_j of eq. (1).

    Args:
        images: (B, C, H, W) with H and W multiples of ``patch``.
        patch: patch side in pixels.

    Returns:
        (B, m, C * patch * patch), patches in row-major order, pixels flattened as (C, ph, pw)
        to match the layout of the patch projection's convolution kernel.
    """
    B, C, H, W = images.shape
    if H % patch or W % patch:
        raise ConfigError(f"images of {H}x{W} px do not split into {patch}x{patch} patches")
    h, w = H // patch, W // patch
    x = images.reshape(B, C, h, patch, w, patch)              # (B, C, h, ph, w, pw)
    x = x.permute(0, 2, 4, 1, 3, 5)                           # (B, h, w, C, ph, pw)
    return x.reshape(B, h * w, C * patch * patch)             # (B, m, C*ph*pw)


def embed(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eq. (1): e_j^0 = Embed(I_j), a linear patch projection plus position, with [CLS] in front.

    Args:
        vit: a timm VisionTransformer (its patch projection, [CLS]/register tokens, pos_embed).
        images: (B, C, H, W) normalised images.

    Returns:
        (B, R + m, D): [x_0, E_0], R prefix tokens then the m patch embeddings.
    """
    proj = vit.patch_embed.proj                               # Conv2d(C, D, k=p, stride=p)
    patches = patchify(images, proj.kernel_size[0])           # (B, m, C*p*p)
    W = proj.weight.reshape(proj.out_channels, -1)            # (D, C*p*p)
    E = patches @ W.T + proj.bias                             # (B, m, D)
    E = layer_norm(vit.patch_embed.norm, E)
    B = images.shape[0]
    prefix = [t.expand(B, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    if vit.pos_embed is None:
        x = torch.cat(prefix + [E], dim=1)
    elif vit.no_embed_class:                                  # positions for patches only
        x = torch.cat(prefix + [E + vit.pos_embed], dim=1)
    else:                                                     # positions for prefix + patches
        x = torch.cat(prefix + [E], dim=1) + vit.pos_embed    # (B, R+m, D)
    return layer_norm(vit.norm_pre, x)


def attention(block: nn.Module, x: torch.Tensor, return_weights: bool = False):
    """Multi-head self-attention MSA(x) of one block, written out (inside eq. (2)).

    Q, K, V = x W_qkv split into H heads of width hd; A = softmax(Q K^T / sqrt(hd)); out = A V,
    heads concatenated, then the output projection.

    Args:
        block: a timm ``Block`` (uses ``block.attn.qkv``, ``block.attn.proj``).
        x: (B, N, D) the *normalised* tokens, i.e. LN_1 of the block input.
        return_weights: also return the attention weights.

    Returns:
        (B, N, D), and (B, H, N, N) weights when ``return_weights``.
    """
    attn = block.attn
    B, N, _ = x.shape
    H, hd = attn.num_heads, attn.head_dim
    qkv = x @ attn.qkv.weight.T
    if attn.qkv.bias is not None:
        qkv = qkv + attn.qkv.bias                             # (B, N, 3*H*hd)
    q, k, v = qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)  # each (B, H, N, hd)
    q, k = attn.q_norm(q), attn.k_norm(k)                     # Identity in a plain ViT
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)          # (B, H, N, N)
    A = torch.softmax(scores, dim=-1)
    out = (A @ v).transpose(1, 2).reshape(B, N, H * hd)       # (B, N, H*hd) heads side by side
    norm = getattr(attn, "norm", None)                       # scale_norm: timm 1.0.16+ only
    out = out if norm is None else norm(out)                  # Identity in a plain ViT
    out = out @ attn.proj.weight.T + attn.proj.bias           # (B, N, D)
    return (out, A) if return_weights else out


def mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's two-layer MLP (inside eq. (2)): fc2(GELU(fc1(x))), on (B, N, D) -> (B, N, D)."""
    m = block.mlp
    h = x @ m.fc1.weight.T + m.fc1.bias                       # (B, N, hidden)
    if getattr(m.act, "approximate", "none") == "tanh":
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    else:
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))       # exact GELU
    h = m.norm(h)                                             # Identity in a plain ViT
    return h @ m.fc2.weight.T + m.fc2.bias                    # (B, N, D)


def block(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eq. (2): one transformer layer L_i with pre-norm residuals and layer-scale.

    x <- x + LS_1(MSA(LN_1(x)));  x <- x + LS_2(MLP(LN_2(x))). Works on any token sequence, so
    the same function runs [x, E] (eq. 2) and [x, P, E] (eqs. 5 and 7).

    Args:
        blk: a timm ``Block``.
        x: (B, N, D).

    Returns:
        (B, N, D).
    """
    x = x + _scale(blk.ls1, attention(blk, layer_norm(blk.norm1, x)))
    return x + _scale(blk.ls2, mlp(blk, layer_norm(blk.norm2, x)))


def vit_forward(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eqs. (1)-(2) end to end: embed, N blocks, final norm; timm's ``forward_features``.

    Returns:
        (B, R + m, D) final tokens (after the last LayerNorm).
    """
    x = embed(vit, images)
    for blk in vit.blocks:
        x = block(blk, x)
    return layer_norm(vit.norm, x)


def head(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eq. (3): y = Head(x_N), from the final tokens (B, R + m, D) to logits (B, num_classes).

    The head reads the [CLS] token (``global_pool="token"``) or the mean of the patch tokens
    (``"avg"``), then the optional fc_norm and the linear classifier.
    """
    if vit.global_pool == "token":
        feat = x[:, 0]                                        # (B, D) x_N, the [CLS] token
    elif vit.global_pool == "avg":
        feat = x[:, vit.num_prefix_tokens:].mean(1)           # (B, D) mean of E_N
    else:
        raise ConfigError(f"head() knows global_pool 'token' and 'avg', not {vit.global_pool!r}")
    feat = layer_norm(vit.fc_norm, feat)
    return feat @ vit.head.weight.T + vit.head.bias


def _insert(x: torch.Tensor, P: torch.Tensor, R: int, n_old: int) -> torch.Tensor:
    """Put prompts P (p, D) after the R prefix tokens of x (B, R+n_old+m, D), replacing n_old."""
    P = P.unsqueeze(0).expand(x.shape[0], -1, -1)             # (B, p, D)
    return torch.cat([x[:, :R], P, x[:, R + n_old:]], dim=1)  # (B, R+p+m, D)


def shallow_forward(vit: nn.Module, P: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Eqs. (4)-(6), VPT-Shallow: prompts P enter once, at the input of L_1, and are carried on.

    [x_1, Z_1, E_1] = L_1([x_0, P, E_0]);  [x_i, Z_i, E_i] = L_i([x_{i-1}, Z_{i-1}, E_{i-1}]).
    P is inserted after the position embedding, so it carries no position.

    Args:
        P: (p, D) prompt tokens.

    Returns:
        (B, R + p + m, D) final tokens after the last LayerNorm; ``head`` reads x_N = [:, 0].
    """
    x = _insert(embed(vit, images), P, vit.num_prefix_tokens, 0)  # (B, R+p+m, D)
    for blk in vit.blocks:
        x = block(blk, x)
    return layer_norm(vit.norm, x)


def deep_forward(vit: nn.Module, Ps: Prompts, images: torch.Tensor) -> torch.Tensor:
    """Eqs. (7)-(8), VPT-Deep: a fresh prompt set P_{i-1} at the input of every layer L_i.

    [x_i, _, E_i] = L_i([x_{i-1}, P_{i-1}, E_{i-1}]): the prompt outputs of a layer are thrown
    away and replaced, so the sequence length stays R + p + m.

    Args:
        Ps: (N, p, D) tensor or a list of N (p, D) tensors, one per block.

    Returns:
        (B, R + p + m, D) final tokens (the last layer's prompt outputs included).
    """
    if len(Ps) != len(vit.blocks):
        raise ConfigError(f"deep_forward needs one prompt set per block: got {len(Ps)} for "
                          f"{len(vit.blocks)} blocks")
    R, x, n_p = vit.num_prefix_tokens, embed(vit, images), 0
    for blk, P in zip(vit.blocks, Ps):
        x = _insert(x, P, R, n_p)                             # replace the previous prompts
        n_p = P.shape[0]
        x = block(blk, x)
    return layer_norm(vit.norm, x)


def prompt_storage(vit: nn.Module, p: int, deep: bool) -> int:
    """Prompt parameters to store per task: p*d (shallow) or N*p*d (deep) (Sec. 3.2)."""
    return p * vit.embed_dim * (len(vit.blocks) if deep else 1)
