"""Frozen-prefix cache: train prompts that start at block k > 0 on the cached output of blocks 0..k-1.

With ``PromptConfig(layers=(k, ..., N-1))`` (prompts only in the later blocks: Fig. 7's depth
ablation, the lab's "last k") nothing before block k trains. The patch embedding and blocks
0..k-1 are frozen and, with the backbone in eval mode (``PromptedViT`` keeps a frozen backbone
there), deterministic; for a training set without random augmentation (the course's in-memory
``TaskDataset`` has none) their output is the same in every epoch. ``FrozenPrefix`` computes it
once and trains on it::

    fp = FrozenPrefix(model)                 # model: a PromptedViT whose prompts start at k >= 1
    train_tokens = fp.cache(train_set)       # TensorDataset: tokens (N, R+m, D), labels (N,)
    val_tokens = fp.cache(val_set)
    vx.train(fp, train_tokens, val_tokens, cfg)  # trains model's prompts and head (shared)
    model(images)                            # the PromptedViT itself, on images, as before

The forward on cached tokens is the model's own loop (``forward_blocks``) from block k on, on the
path the model takes (``model.block_path()``), so logits and gradients equal
``model(images)`` up to float rounding. Tokens are cached in fp32 without autocast; a bf16 run of
the uncached model computes blocks 0..k-1 in bf16 instead (a rounding-level difference).

What it saves is in the README's Performance section (``bench train --cpu-profile``, rows
``vpt-last-half`` and ``vpt-last-half+cache``). With ``layers="deep"`` (k=0) only the patch
embedding would be cached, under 1% of a step, so ``FrozenPrefix`` refuses it. The cache holds
N x (R+m) x D floats: 21 MB for 800 images at 56 px (17 tokens of 384).
``TrainConfig(checkpoint=...)`` does not work with the wrapper (``save_prompts`` reads
``model.vit``); save the ``PromptedViT`` after training instead.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .prompted import PromptedViT

__all__ = ["FrozenPrefix"]


class FrozenPrefix(nn.Module):
    """A ``PromptedViT`` that reads the cached output of its frozen blocks 0..k-1 instead of images.

    It shares everything with ``model`` (backbone, prompts, head): training it trains ``model``.
    ``method``, ``num_classes`` and ``embed_dim`` are ``model``'s, so ``vx.train`` picks the same
    optimizer and learning rate as for ``model``.

    Args:
        model: a ``PromptedViT`` with a frozen backbone whose first prompted block k is >= 1.

    Raises:
        ConfigError: for a model that is not a ``PromptedViT``, has no prompts, prompts from block 0,
            a learned [CLS] (``learn_cls=True``) or trainable backbone weights.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, PromptedViT):
            raise ConfigError(f"model={type(model).__name__} must be a vx.PromptedViT (e.g. from "
                              f"vx.make_model('vpt-deep', vit, C, layers=(6, 7, 8, 9, 10, 11)))")
        cfg, blocks = model.cfg, tuple(model.prompt_blocks)
        if not blocks:
            raise ConfigError(f"length={cfg.length}: the model has no prompts; for a head alone vx.train "
                              f"already caches the final features (TrainConfig(cache_features='auto'))")
        if blocks[0] == 0:
            raise ConfigError(
                f"layers={cfg.layers!r} puts prompts into block 0, so only the patch embedding is frozen "
                f"before them (under 1% of a VPT-deep step at 56 px): nothing worth caching. "
                f"FrozenPrefix needs layers that start at block k >= 1, e.g. "
                f"layers={tuple(range(model.depth // 2, model.depth))}")
        if cfg.learn_cls:
            raise ConfigError("learn_cls=True trains a [CLS] offset that enters before block 0, so blocks "
                              "before the first prompts are not frozen; use learn_cls=False")
        trainable = [n for n, p in model.vit.named_parameters() if p.requires_grad]
        if trainable:
            raise ConfigError(f"the backbone has {len(trainable)} trainable tensors (e.g. {trainable[0]!r}): "
                              f"blocks before the prompts are not frozen; build the model with freeze=True")
        self.model = model
        self.start = blocks[0]
        self.method = model.method
        self.num_classes = model.num_classes
        self.embed_dim = model.embed_dim
        self._seen: Optional[tuple] = None   # the frozen weights the cached tokens were computed with

    # ----------------------------------------------------------------- caching
    def _frozen_key(self) -> tuple:
        """(storage, version) of every backbone tensor that the cached tokens depend on."""
        vit = self.model.vit
        mods = [vit.patch_embed, vit.norm_pre, *vit.blocks[:self.start]]
        tensors = [t for m in mods for t in (*m.parameters(), *m.buffers())]
        tensors += [t for t in (getattr(vit, n, None) for n in ("cls_token", "reg_token", "pos_embed"))
                    if isinstance(t, torch.Tensor)]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part: embedding and blocks 0..k-1 on images (B, C, H, W) -> tokens (B, R+m, D).

        Runs without gradients and with the backbone in eval mode (restored afterwards), in fp32
        even inside an autocast region.
        """
        self.model.check_images(images)
        vit = self.model.vit
        was_training = vit.training
        vit.eval()
        try:
            with torch.autocast(images.device.type, enabled=False):
                x = self.model.embed(images)                                    # (B, R+m, D)
                for blk in vit.blocks[:self.start]:
                    x = blk(x)                                                  # (B, R+m, D)
        finally:
            vit.train(was_training)
        self._seen = self._frozen_key()
        return x

    def cache(self, data, batch_size: int = 256, device=None) -> torch.utils.data.TensorDataset:
        """``encode`` a whole dataset once: a TensorDataset of (tokens (N, R+m, D), labels (N,)).

        Args:
            data: a Dataset (an in-memory ``TaskDataset`` or ``TensorDataset`` is read directly) or a
                DataLoader of (image, label); it must not augment at random, or the cache would
                freeze one draw.
            batch_size: images per ``encode`` call.
            device: where to compute and keep the tokens (default: the model's device).
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
        device = device or next(self.model.parameters()).device
        tokens, labels = [], []
        for x, y in _batches(data, batch_size):
            tokens.append(self.encode(x.to(device)))
            labels.append(torch.as_tensor(y).to(device))
        if not tokens:
            raise ConfigError("data is empty: there is nothing to cache")
        return torch.utils.data.TensorDataset(torch.cat(tokens), torch.cat(labels))

    # ----------------------------------------------------------------- forward
    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Refuse anything but cached tokens (B, R+m, D) computed with the current frozen weights."""
        m = self.model
        want = (m.num_prefix + m.num_patches, m.embed_dim)
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != want:
            raise ConfigError(f"FrozenPrefix takes cached tokens of shape (B, {want[0]}, {want[1]}) from "
                              f".cache() or .encode(), got shape {tuple(tokens.shape)}; to classify "
                              f"images, call the PromptedViT itself")
        if self._seen is not None and self._seen != self._frozen_key():
            raise ConfigError(f"the backbone's embedding or blocks 0..{self.start - 1} changed since the "
                              f"tokens were cached; call .cache() again")

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) from the output of block k-1 (B, R+m, D): the model's own
        ``forward_blocks`` from block k on, then its norm, pool and fc_norm."""
        self.check_tokens(tokens)
        m = self.model
        x, n_p = m.forward_blocks(tokens, start=self.start, cls_only=m.cfg.pool == "cls")
        return m.vit.fc_norm(m.pool(m.vit.norm(x), n_p))                      # (B, D)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """The model's head: (B, D) -> (B, num_classes)."""
        return self.model.forward_head(feats)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from cached tokens (B, R+m, D)."""
        return self.forward_head(self.forward_features(tokens))

    def extra_repr(self) -> str:
        return f"cached blocks 0..{self.start - 1}, prompts from block {self.start}"


def _batches(data, batch_size: int) -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches in order: in-memory tensors sliced, anything else through a DataLoader."""
    if isinstance(data, torch.utils.data.DataLoader):
        yield from data
        return
    if hasattr(data, "images") and hasattr(data, "labels"):
        x, y = data.images, torch.as_tensor(data.labels)
    elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    else:
        yield from torch.utils.data.DataLoader(data, batch_size=batch_size)
        return
    for k in range(0, len(x), batch_size):
        yield x[k:k + batch_size], y[k:k + batch_size]
