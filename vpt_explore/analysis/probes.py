"""Read-only probes: per-layer [CLS] embeddings and attention maps (what prompts do, Fig. 9).

Every probe registers hooks inside a context manager and removes them in ``finally``, so a forward
that raises leaves the model exactly as it was. Probes never touch parameters; the measurement
helpers run in eval mode and restore each submodule's train/eval flag afterwards.

Token layout at the input of block ``i`` of a ``PromptedViT`` (R = [CLS] + registers, p prompts,
m patches)::

    prompt_slot "before":  [ prefix (R) | prompts (p) | patches (m) ]
    prompt_slot "after":   [ prefix (R) | patches (m) | prompts (p) ]

p is 0 before the first prompted block and for locations "add" / "concat-channel".
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, bad_choice
from ..model.tokens import TokenLayout, as_slice, spans  # noqa: F401 (TokenLayout re-exported)


def _backbone(model: nn.Module) -> nn.Module:
    vit = getattr(model, "vit", model)
    if not hasattr(vit, "blocks") or not hasattr(vit, "num_prefix_tokens"):
        raise ConfigError(f"{type(model).__name__} is neither a PromptedViT nor a timm ViT "
                          f"(no .blocks / .num_prefix_tokens); probes need one of those")
    return vit


_sl = as_slice  # attributions.py reads it under this name


def num_prompts_at(model: nn.Module, layer: int) -> int:
    """Number of prompt tokens in the input sequence of block ``layer`` (0 for a plain ViT)."""
    blocks, cfg = getattr(model, "prompt_blocks", ()), getattr(model, "cfg", None)
    if not blocks or cfg is None or cfg.location in ("add", "concat-channel"):
        return 0
    return cfg.length if layer >= min(blocks) else 0


def token_layout(model: nn.Module, layer: int, n_tokens: int) -> TokenLayout:
    """Which indices of block ``layer``'s ``n_tokens``-long input are prefix / prompts / patches."""
    R, p = _backbone(model).num_prefix_tokens, num_prompts_at(model, layer)
    if n_tokens - R - p < 1:
        raise ConfigError(f"block {layer} sees {n_tokens} tokens, fewer than {R} prefix + {p} prompt "
                          f"tokens + 1 patch; is this a prefix-path model (as_prefix)?")
    return spans(R, p, n_tokens, getattr(model, "prompt_slot", "before"))


def patch_grid(model: nn.Module, m: int) -> tuple:
    """(h, w) of the patch grid holding ``m`` patch tokens."""
    h, w = _backbone(model).patch_embed.grid_size
    if h * w == m:
        return int(h), int(w)
    side = int(round(m ** 0.5))
    if side * side != m:
        raise ConfigError(f"{m} patch tokens do not form a square grid")
    return side, side


@contextlib.contextmanager
def _hooks() -> Iterator[list]:
    """Collects hook handles and removes every one of them on exit, even on error."""
    handles: list = []
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode, then restore every submodule's own ``training`` flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


@torch.no_grad()
def cls_per_layer(model: nn.Module, images: torch.Tensor, token: str = "cls") -> torch.Tensor:
    """The [CLS] embedding after the embedding and after each block (the residual stream, eq. (2)).

    Args:
        model: a ``PromptedViT`` or a plain timm VisionTransformer.
        images: (B, C, H, W) normalised images.
        token: ``"cls"`` for the [CLS] token (raises ConfigError when the backbone has none), or
            ``"image"`` for the mean of the patch tokens (prompts and registers excluded).

    Returns:
        (B, L+1, D): index 0 is the input of block 0, index i+1 the output of block i. Values are
        before the final ``norm`` (the head sees ``norm`` of the last entry).

    timm's ``forward_intermediates(..., return_prefix_tokens=True)`` gives the block outputs of a
    plain ViT, but not the input of block 0, and it runs the backbone without the prompts; hooks on
    the blocks see both, for a PromptedViT and a plain ViT alike (``tests/analysis/test_probes.py``
    checks the two agree on a plain ViT).
    """
    if token not in ("cls", "image"):
        raise bad_choice("token", token, ("cls", "image"))
    vit = _backbone(model)
    if token == "cls" and getattr(vit, "cls_token", None) is None:
        raise ConfigError("this backbone has no [CLS] token (class_token=False); "
                          "use token='image' for the mean patch embedding")
    outs: List[Optional[torch.Tensor]] = [None] * (len(vit.blocks) + 1)

    def pick(x: torch.Tensor, layer: int) -> torch.Tensor:  # x (B, N, D) -> (B, D)
        if token == "cls":
            return x[:, 0].detach().clone()
        return x[:, _sl(token_layout(model, layer, x.shape[1]).patches)].mean(1)

    def pre(_m, args):
        outs[0] = pick(args[0], 0)

    def post(i):
        def hook(_m, _args, out):
            outs[i + 1] = pick(out, i)
        return hook

    with _hooks() as handles, eval_mode(model):
        handles.append(vit.blocks[0].register_forward_pre_hook(pre))
        handles += [blk.register_forward_hook(post(i)) for i, blk in enumerate(vit.blocks)]
        model(images)
    if any(o is None for o in outs):
        raise ConfigError(f"{type(model).__name__} does not call its blocks as modules (e.g. a "
                          f"PrefixViT); probe the token-path PromptedViT instead")
    return torch.stack(outs, dim=1)  # (B, L+1, D)


class AttentionRecord:
    """Softmax attention weights of every block, filled by ``record_attention``.

    Attributes:
        maps: per block, (B, H, N, N) weights of the latest forward (None if not run).
        num_prefix: R, [CLS] + register tokens.
        prompt_blocks: blocks that receive fresh prompts.
        prompt_slot: ``"before"`` or ``"after"`` the patches.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.maps: List[Optional[torch.Tensor]] = [None] * len(_backbone(model).blocks)
        self.num_prefix = _backbone(model).num_prefix_tokens
        self.prompt_blocks = tuple(getattr(model, "prompt_blocks", ()))
        self.prompt_slot = getattr(model, "prompt_slot", "before")

    def num_prompts(self, layer: int) -> int:
        """Prompt tokens in block ``layer``'s sequence."""
        return num_prompts_at(self.model, layer)

    def layout(self, layer: int) -> TokenLayout:
        """Token index ranges of block ``layer`` (needs a recorded map)."""
        if self.maps[layer] is None:
            raise ConfigError(f"no attention recorded for block {layer}: run a forward inside the "
                              f"context (a PrefixViT computes attention itself and cannot be probed)")
        return token_layout(self.model, layer, self.maps[layer].shape[-1])


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record each block's softmax attention (B, H, N, N) during forwards inside the context.

    Fused attention returns no weights, so ``blk.attn.fused_attn`` is switched off on the block
    instances only inside the context; the original values and all hooks are restored on exit,
    even when the forward raises. Each forward overwrites ``record.maps``.

    Why not timm's own tools: ``timm.layers.set_fused_attn`` only sets the default for modules built
    afterwards; ``timm.utils.AttentionExtract`` either traces the model with torch.fx (which cannot
    trace a PromptedViT: its shape checks see Proxies) or registers hooks it offers no way to remove,
    and switches the whole model to eval or train. The same ``attn_drop`` hook point is used here.
    """
    vit, rec = _backbone(model), AttentionRecord(model)
    attns = [blk.attn for blk in vit.blocks]
    if not all(hasattr(a, "attn_drop") for a in attns):
        raise ConfigError("record_attention needs timm Attention modules with an attn_drop submodule")
    fused = [getattr(a, "fused_attn", None) for a in attns]

    def grab(i):
        def hook(_m, args, _out):  # the input of attn_drop is the softmax, before any dropout
            rec.maps[i] = args[0].detach().clone()
        return hook

    try:
        with _hooks() as handles:
            for i, a in enumerate(attns):
                if fused[i] is not None:
                    a.fused_attn = False
                handles.append(a.attn_drop.register_forward_hook(grab(i)))
            yield rec
    finally:
        for a, f in zip(attns, fused):
            if f is not None:
                a.fused_attn = f


@torch.no_grad()
def attention_to_prompts(model: nn.Module, images: torch.Tensor) -> dict:
    """Where [CLS] looks: shares of its attention on prefix, prompt and patch tokens per head.

    Returns:
        dict of numpy arrays: ``"prefix"``, ``"prompt"``, ``"patch"`` (L, H) shares of [CLS]
        attention (batch mean, sum to 1 per layer and head); ``"per_prompt"`` (L, H, p) [CLS] ->
        prompt k; ``"per_prompt_all"`` (L, p) attention prompt k receives from all queries, head
        mean (NaN where a layer has fewer prompts); ``"patch_maps"`` (B, L, H, h, w) [CLS] -> patch
        attention on the patch grid; ``"num_prompts"`` list of p per layer; ``"grid"`` (h, w).
    """
    if getattr(_backbone(model), "cls_token", None) is None:
        raise ConfigError("attention_to_prompts follows the [CLS] token; this backbone has none")
    with eval_mode(model), record_attention(model) as rec:
        model(images)
    for i in range(len(rec.maps)):
        rec.layout(i)                                          # clear error if nothing recorded
    L, (B, H) = len(rec.maps), rec.maps[0].shape[:2]
    P = max([rec.num_prompts(i) for i in range(L)] + [0])
    out = {k: np.zeros((L, H)) for k in ("prefix", "prompt", "patch")}
    out["per_prompt"] = np.full((L, H, P), np.nan)
    out["per_prompt_all"] = np.full((L, P), np.nan)
    maps = []
    for i, A in enumerate(rec.maps):                           # A (B, H, N, N)
        lay, cls = rec.layout(i), A[:, :, 0].double()          # cls (B, H, N)
        for key, r in (("prefix", lay.prefix), ("prompt", lay.prompts), ("patch", lay.patches)):
            out[key][i] = cls[..., _sl(r)].sum(-1).mean(0).numpy()
        p = len(lay.prompts)
        if p:
            out["per_prompt"][i, :, :p] = cls[..., _sl(lay.prompts)].mean(0).numpy()
            out["per_prompt_all"][i, :p] = A[..., _sl(lay.prompts)].mean((0, 1, 2)).numpy()
        h, w = patch_grid(model, len(lay.patches))
        maps.append(cls[..., _sl(lay.patches)].reshape(B, H, h, w))  # (B, H, h, w)
    out["patch_maps"] = torch.stack(maps, 1).float().numpy()      # (B, L, H, h, w)
    out["num_prompts"] = [rec.num_prompts(i) for i in range(L)]
    out["grid"] = (h, w)
    return out


def attention_rollout(rec: AttentionRecord) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) from [CLS] to the input patches: (B, h, w).

    Tracks M (B, N, m): how much each token draws from each input patch, through
    ``0.5 * head-mean(A) + 0.5 * I`` per block. Prompt tokens hold no patch content when they are
    inserted (rows reset to zero), so deep prompts never leak earlier layers into the rollout.
    """
    M = None
    for i, A in enumerate(rec.maps):
        lay = rec.layout(i)
        a = 0.5 * A.mean(1) + 0.5 * torch.eye(A.shape[-1])         # (B, N, N)
        a = a / a.sum(-1, keepdim=True)
        new = torch.zeros(A.shape[0], A.shape[-1], len(lay.patches))  # (B, N, m)
        if M is None:
            new[:, _sl(lay.patches)] = torch.eye(len(lay.patches))
        else:
            new[:, _sl(lay.prefix)] = M[:, _sl(old.prefix)]
            new[:, _sl(lay.patches)] = M[:, _sl(old.patches)]
            if i not in rec.prompt_blocks and len(lay.prompts) == len(old.prompts):
                new[:, _sl(lay.prompts)] = M[:, _sl(old.prompts)]   # shallow prompts carry on
        M, old = a @ new, lay
    h, w = patch_grid(rec.model, M.shape[-1])
    return M[:, 0].reshape(-1, h, w)                               # (B, h, w)
