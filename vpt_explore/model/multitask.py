"""``MultiTaskVPT``: one frozen backbone, many tasks, one batched forward pass (paper Sec. 1, Fig. 1).

VPT stores only prompts and a head per task, so one deployed backbone can serve a batch that mixes
tasks: each sample gets its own task's prompts, gathered into a (B, p, D) tensor (token path), or
its own task's cached key/value rows, gathered into (B, H, p, hd) tensors (VPT-prefix path, see
``vpt_explore.prefix``). The backbone runs once for the whole batch; each task's head then reads
its own samples. Results equal running every task's ``PromptedViT`` alone on its samples.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError, DataError, bad_choice
from .prefix import _check_eval, check_prefix_exact, kv_sources, kv_sources_changed, prompt_kv_table
from .prompted import PATHS
from .tokens import embed_patches

__all__ = ["MultiTaskVPT"]

TaskIds = Union[Sequence[str], torch.Tensor]


def _shape_of(model: nn.Module) -> Dict[str, object]:
    """The fields that must agree across tasks for samples to share one batched pass."""
    return {"length": model.cfg.length, "prompt blocks": tuple(model.prompt_blocks),
            "location": model.cfg.location, "pool": model.cfg.pool, "prompt_slot": model.prompt_slot}


class MultiTaskVPT(nn.Module):
    """Several VPT tasks over one shared frozen backbone, served in one batched forward pass.

    Args:
        backbone: the timm ViT that every task's ``PromptedViT`` wraps (the same object).
        models: task name -> ``PromptedViT``. Heads and ``num_classes`` may differ; the prompt
            length, prompted blocks, location, pool and prompt slot must agree. Sharing, init,
            ``learn_cls`` may differ.
        path: ``"token"`` (gather per-sample prompt tokens), ``"prefix"`` (gather per-sample cached
            K/V; exact only where ``PrefixViT`` is, see ``check_prefix_exact``) or ``"auto"``
            (prefix when exact, else token).

    Inference only: call ``.eval()`` first. With the prefix path every forward first checks that
    the cached K/V rows still match each task's prompts and backbone weights (as ``PrefixViT``
    does) and recomputes them (``refresh()``) if any changed.

    Raises:
        ConfigError: a task wraps another backbone, the tasks' setups differ (listed), a task uses
            ``location='concat-channel'``, or ``path='prefix'`` on a setup where it is not exact.
    """

    def __init__(self, backbone: nn.Module, models: Mapping[str, nn.Module], path: str = "auto"):
        super().__init__()
        if not models:
            raise ConfigError("models is empty; give at least one task: {'name': PromptedViT}")
        if path not in PATHS:
            raise bad_choice("path", path, PATHS)
        names = list(models)
        for name, m in models.items():
            if not isinstance(name, str) or not name or "." in name:
                raise ConfigError(f"task name {name!r} must be a non-empty string without '.'")
            if getattr(m, "vit", None) is not backbone:
                raise ConfigError(f"task {name!r} wraps another backbone object; build every task's "
                                  f"PromptedViT over the same backbone passed to MultiTaskVPT")
        ref = _shape_of(models[names[0]])
        for name in names[1:]:
            other = _shape_of(models[name])
            diff = [f"{k}: {ref[k]!r} ({names[0]}) vs {other[k]!r} ({name})" for k in ref if ref[k] != other[k]]
            if diff:
                raise ConfigError("tasks must share the prompt setup to share one batched pass; "
                                  "mismatch: " + "; ".join(diff))
        if ref["location"] == "concat-channel" and ref["length"] > 0:
            raise ConfigError("location='concat-channel' changes the patch projection per task; "
                              "MultiTaskVPT supports 'prepend', 'prepend-pixel' and 'add'")
        if path in ("auto", "prefix"):
            try:
                for m in models.values():
                    check_prefix_exact(m)
                path = "prefix"
            except ConfigError:
                if path == "prefix":
                    raise
                path = "token"
        self.backbone = backbone
        self.tasks = nn.ModuleDict(models)
        self.names: List[str] = names
        self.path = path
        self.blocks: Tuple[int, ...] = ref["prompt blocks"]
        if path == "prefix":
            self.register_buffer("kv", torch.empty(0), persistent=False)
            self.refresh()

    # ----------------------------------------------------------------- helpers
    def _kv_table(self) -> torch.Tensor:
        with torch.no_grad():
            kv = torch.stack([prompt_kv_table(m) for m in self.tasks.values()])  # (T, L, 2, H, p, hd)
        return kv.permute(1, 2, 0, 3, 4, 5).contiguous()                          # (L, 2, T, H, p, hd)

    @torch.no_grad()
    def refresh(self) -> "MultiTaskVPT":
        """Recompute the cached K/V rows (prefix path) from the current prompts and weights."""
        if self.path == "prefix":
            self.kv = self._kv_table()
            self._seen = [kv_sources(m, self.blocks) for m in self.tasks.values()]
        return self

    def is_stale(self) -> bool:
        """True when a task's prompts or the weights behind the cached K/V rows changed since ``refresh``."""
        return self.path == "prefix" and any(
            kv_sources_changed(seen, m, self.blocks) for seen, m in zip(self._seen, self.tasks.values()))

    def task_index(self, task_ids: TaskIds, batch: int) -> torch.Tensor:
        """Task names or indices (into ``self.names``) -> a LongTensor (B,) of task indices."""
        if isinstance(task_ids, torch.Tensor):
            idx = task_ids.long().flatten()
        else:
            bad = [t for t in task_ids if t not in self.names]
            if bad:
                raise bad_choice("task_ids", bad[0], self.names)
            idx = torch.tensor([self.names.index(t) for t in task_ids], dtype=torch.long)
        if idx.numel() != batch:
            raise DataError(f"task_ids has {idx.numel()} entries for a batch of {batch} images")
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self.names)):
            raise DataError(f"task index out of range 0..{len(self.names) - 1}: {idx.tolist()}")
        return idx

    def _embed(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Eq. (1) as in ``PromptedViT.embed``, with each sample's task's [CLS] delta: (B, R+m, D)."""
        vit = self.backbone
        x = embed_patches(vit, vit.patch_embed(images))                           # (B, R+m, D)
        if any(m.cfg.learn_cls for m in self.tasks.values()):
            zero = x.new_zeros(1, 1, x.shape[-1])
            deltas = torch.stack([m.cls_delta if m.cfg.learn_cls else zero
                                  for m in self.tasks.values()])                   # (T, 1, 1, D)
            x = torch.cat([x[:, :1] + deltas[idx.to(x.device)][:, 0], x[:, 1:]], dim=1)
        return x

    # ----------------------------------------------------------------- forward
    def forward_features(self, images: torch.Tensor, task_ids: TaskIds) -> torch.Tensor:
        """Pooled features (B, D), every sample with its own task's prompts."""
        ref = self.tasks[self.names[0]]
        for m in self.tasks.values():
            _check_eval(m)
        ref.check_images(images)
        if self.is_stale():                                          # prompts trained or edited since
            self.refresh()
        idx = self.task_index(task_ids, images.shape[0]).to(images.device)

        def gathered(i, B):                                  # each sample's own task's prompts
            if i not in self.blocks:
                return None
            if self.path == "prefix":
                j = self.blocks.index(i)
                return self.kv[j, 0, idx], self.kv[j, 1, idx]                       # K, V (B, H, p, hd)
            return torch.stack([m.layer_prompts(i) for m in self.tasks.values()])[idx]  # (B, p, D)
        x = self._embed(images, idx)                                               # (B, R+m, D)
        x, n_p = ref.forward_blocks(x, prompts_of=gathered, path=self.path)        # ref's loop
        return self.backbone.fc_norm(ref.pool(self.backbone.norm(x), n_p))

    def forward_by_task(self, images: torch.Tensor, task_ids: TaskIds
                        ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """task -> (sample indices (b,), logits (b, num_classes of that task)), for tasks present."""
        feats = self.forward_features(images, task_ids)
        idx = self.task_index(task_ids, images.shape[0]).to(feats.device)
        out = {}
        for t, name in enumerate(self.names):
            rows = (idx == t).nonzero().flatten()
            if rows.numel():
                out[name] = (rows, self.tasks[name].forward_head(feats[rows]))
        return out

    def forward(self, images: torch.Tensor, task_ids: TaskIds) -> List[torch.Tensor]:
        """One batched pass; returns a list of B logit vectors, sample b's of shape (C_task(b),)."""
        result: List[torch.Tensor] = [None] * images.shape[0]  # type: ignore[list-item]
        for rows, logits in self.forward_by_task(images, task_ids).values():
            for r, row in zip(rows.tolist(), logits):
                result[r] = row
        return result

    def extra_repr(self) -> str:
        return f"tasks={self.names}, path={self.path!r}, prompted blocks={list(self.blocks)}"
