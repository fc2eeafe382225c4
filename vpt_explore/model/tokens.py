"""The token sequence of a prompted ViT, in one place (paper Sec. 3.2, eqs. 5 and 7)::

    slot "before":  [ prefix (R) | prompts (p) | patches (m) ]      the paper's layout
    slot "after":   [ prefix (R) | patches (m) | prompts (p) ]      same logits (attention is a set op)

R counts [CLS] and register tokens (timm's ``num_prefix_tokens``). ``insert_prompts`` puts a
block's prompts in (shallow: once; deep: replacing the previous block's p prompt outputs), ``spans``
says which indices hold what; PromptedViT, the ensemble, MultiTaskVPT and the probes all use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

SLOTS = ("before", "after")


@dataclass(frozen=True)
class TokenLayout:
    """Index ranges of prefix ([CLS] + registers), prompt and patch tokens in one sequence."""

    prefix: range
    prompts: range
    patches: range


def embed_patches(vit, patches: torch.Tensor) -> torch.Tensor:
    """Eq. (1) after the patch projection, as timm's ``forward_features`` does it: [CLS]/register
    tokens and position embeddings (``_pos_embed``), patch dropout and ``norm_pre``.

    Args:
        vit: a timm ``VisionTransformer``.
        patches: projected patches (B, m, D) (or (B, h, w, D) for a dynamic-size backbone).

    Returns:
        (B, R+m, D).
    """
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(patches)))


def spans(num_prefix: int, n_prompts: int, n_tokens: int, slot: str = "before") -> TokenLayout:
    """The layout of an ``n_tokens``-long sequence holding ``n_prompts`` prompts in ``slot``."""
    R, p = num_prefix, n_prompts
    if slot == "after":
        return TokenLayout(range(R), range(n_tokens - p, n_tokens), range(R, n_tokens - p))
    return TokenLayout(range(R), range(R, R + p), range(R + p, n_tokens))


def as_slice(r: range) -> slice:
    """A range of indices as a slice (for tensors)."""
    return slice(r.start, r.stop)


def insert_prompts(x: torch.Tensor, P: torch.Tensor, num_prefix: int, n_old: int,
                   slot: str = "before") -> Tuple[torch.Tensor, int]:
    """Eqs. (5)/(7): x (B, R+n_old+m, D) with its n_old prompts replaced by P (B, p, D).

    Returns:
        The new sequence (B, R+p+m, D) and p.
    """
    R = num_prefix
    if slot == "after":
        patches = x[:, R:x.shape[1] - n_old]
        return torch.cat([x[:, :R], patches, P], dim=1), P.shape[1]
    return torch.cat([x[:, :R], P, x[:, R + n_old:]], dim=1), P.shape[1]   # (B, R+p+m, D)


def add_prompts(x: torch.Tensor, P: torch.Tensor, num_prefix: int) -> Tuple[torch.Tensor, int]:
    """Location "add": P (B, 1 or m, D) added to the patch embeddings; the length stays, p = 0."""
    R = num_prefix
    return torch.cat([x[:, :R], x[:, R:] + P], dim=1), 0


def split_tokens(x: torch.Tensor, num_prefix: int, n_prompts: int, slot: str = "before"):
    """(prefix, prompts, patches) views of final tokens x (B, R+p+m, D)."""
    lay = spans(num_prefix, n_prompts, x.shape[1], slot)
    return x[:, as_slice(lay.prefix)], x[:, as_slice(lay.prompts)], x[:, as_slice(lay.patches)]
