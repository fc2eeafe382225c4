"""The paper's transfer methods (Table 1, Sec. 4.1 / App. A) behind one factory, ``make_model``.

Every method returns a ``PromptedViT`` (or a small subclass), so all share ``forward_features`` /
``forward_head`` / ``head`` / ``parameter_report`` / ``save_prompts``. Methods that change the
backbone (full, partial, bias, adapter, vpt+bias) work on a deep copy, so the backbone you pass in
stays frozen and can be shared by the prompt methods.

| method       | trains                                   | optimiser |
|--------------|------------------------------------------|-----------|
| full         | everything                               | AdamW     |
| linear       | a linear head                            | SGD       |
| partial-k    | the last k blocks (+ final norm) and head| AdamW     |
| mlp-k        | a k-layer MLP head                       | SGD       |
| sidetune     | a small side network blended with the frozen features, and head | SGD |
| bias         | every bias of the backbone (BitFit) and head | AdamW |
| adapter      | bottleneck adapters after each FFN (reduction r) and head | AdamW |
| vpt-shallow  | prompts at block 0 and head              | SGD       |
| vpt-deep     | prompts at every block and head          | SGD       |
| vpt+bias     | deep prompts, biases and head            | AdamW     |
| ensemble     | k prompt sets (seeds) on one backbone, averaged logits | SGD |
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .config import PromptConfig, _check_int
from .errors import ConfigError, did_you_mean
from .prompts import PromptedViT, _check_backbone

METHODS = ("full", "linear", "partial-1", "mlp-3", "sidetune", "bias", "adapter",
           "vpt-shallow", "vpt-deep", "vpt+bias", "ensemble")
_PATTERN = re.compile(r"^(full|linear|partial-\d+|mlp-\d+|sidetune|bias|adapter|vpt-shallow|vpt-deep|"
                      r"vpt\+bias|ensemble)$")


class Adapter(nn.Module):
    """Bottleneck adapter: h + up(GELU(down(h))) with d -> d/r -> d (Houlsby-style, after the FFN).

    ``up`` starts at zero so the model starts as the pretrained one, while ``down`` is random, so
    both projections get gradients from the first step (zeroing both would freeze them forever).
    """

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def _add_adapters(vit: nn.Module, reduction: int) -> None:
    """Attach ``blk.adapter`` to each block and apply it to the FFN output via a forward hook."""
    for blk in vit.blocks:
        blk.add_module("adapter", Adapter(vit.embed_dim, reduction))
        blk.mlp.register_forward_hook(lambda mod, inp, out, a=blk.adapter: a(out))


def mlp_head(dim: int, num_classes: int, layers: int) -> nn.Sequential:
    """Mlp-k: (k-1) hidden Linear+ReLU layers of width d, then the classifier."""
    mods: List[nn.Module] = []
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, dim), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(dim, num_classes))


class SideTuneViT(PromptedViT):
    """Sidetune: features = a * frozen(x) + (1 - a) * side(x), with a small conv side network."""

    def __init__(self, vit, num_classes, width: int = 32, **kw):
        super().__init__(vit, PromptConfig(length=0), num_classes, **kw)
        C = vit.patch_embed.proj.in_channels if hasattr(vit.patch_embed, "proj") else 3
        self.side = nn.Sequential(
            nn.Conv2d(C, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, vit.embed_dim))
        self.blend = nn.Parameter(torch.zeros(()))  # a = sigmoid(blend) starts at 0.5

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.blend)
        return a * super().forward_features(images) + (1 - a) * self.side(images)


class PromptEnsemble(PromptedViT):
    """Fig. 15: k prompt sets (different seeds) on one frozen backbone, logits averaged.

    All members run in ONE forward pass: the batch is replicated k times, (k*B, ...), and each copy
    gets its own member's prompts; the k heads are applied to their slices and averaged.
    """

    def __init__(self, vit, cfg: PromptConfig, num_classes: int, members: int = 5, seed: int = 0):
        super().__init__(vit, cfg, num_classes, seed=seed)
        if cfg.location not in ("prepend", "prepend-pixel") or cfg.length == 0:
            raise ConfigError(f"ensemble needs token prompts (location 'prepend'/'prepend-pixel', length>0), "
                              f"got location={cfg.location!r}, length={cfg.length}")
        self.members = nn.ModuleList(
            PromptedViT(vit, cfg, num_classes, seed=seed + k) for k in range(members))
        for own in ("prompts", "pixel_prompts"):  # the members hold the prompts
            if hasattr(self, own):
                delattr(self, own)
        self.head = nn.ModuleList(m.head for m in self.members)  # heads, in member order
        for m in self.members:
            del m.head  # owned by self.head now; keeps parameter names unique

    def _insert(self, x, block, n_old):
        k, R = len(self.members), self.num_prefix
        Ps = [m.layer_prompts(block) for m in self.members]
        if Ps[0] is None:
            return x, n_old
        B = x.shape[0] // k
        P = torch.stack(Ps).repeat_interleave(B, dim=0)               # (k*B, p, D)
        P = self.prompt_dropout(P)
        return torch.cat([x[:, :R], P, x[:, R + n_old:]], dim=1), P.shape[1]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(k*B, D): member j's features for the batch are rows j*B .. (j+1)*B."""
        k = len(self.members)
        return super().forward_features(images.repeat(k, 1, 1, 1))  # (k*B, C, H, W)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        k = len(self.members)
        chunks = feats.chunk(k)                                          # k x (B, D)
        return torch.stack([h(self.vit.head_drop(f)) for h, f in zip(self.head, chunks)]).mean(0)

    def layer_prompts(self, i):
        return self.members[0].layer_prompts(i) if hasattr(self, "members") else None


def _parse(method: str):
    if not isinstance(method, str) or not _PATTERN.match(method):
        raise ConfigError(f"method={method!r} is not known; choose one of {list(METHODS)} (partial-k and "
                          f"mlp-k take any k >= 1){did_you_mean(method, METHODS)}")
    name, _, k = method.partition("-") if method.startswith(("partial-", "mlp-")) else (method, "", "")
    if k and int(k) < 1:
        raise ConfigError(f"method={method!r}: k={int(k)} must be >= 1 ({name}-k takes any k >= 1)")
    return name, (int(k) if k else None)


def make_model(method: str, vit: nn.Module, num_classes: int, *, prompt: Optional[PromptConfig] = None,
               length: Optional[int] = None, reduction: int = 8, members: int = 5,
               seed: int = 0, **prompt_kw) -> PromptedViT:
    """Build one of the paper's transfer methods on ``vit``.

    Args:
        method: see ``METHODS``; ``partial-k`` / ``mlp-k`` take any k.
        vit: a timm VisionTransformer (copied for methods that change it).
        num_classes: classes of the downstream task.
        prompt: a PromptConfig for the vpt methods (its ``layers`` is set by the method name).
        length: shortcut for ``prompt.length``.
        reduction: adapter reduction factor r (paper: 8, 64, 256).
        members: prompt sets in the ensemble.
        seed: seeds every new tensor (prompts, head, adapters, side network), so the same seed
            builds the same model whatever ran before.
        **prompt_kw: other PromptConfig fields (location, share, pool, ...).

    Returns:
        A PromptedViT with ``.method`` and ``.method_kwargs`` set.
    """
    name, k = _parse(method)
    _check_backbone(vit)
    if prompt is not None and not isinstance(prompt, PromptConfig):
        raise ConfigError(f"prompt={prompt!r} must be a vx.PromptConfig (or None)")
    _check_int("reduction", reduction, 1)
    _check_int("members", members, 1)
    _check_int("seed", seed)
    unknown = [kw for kw in prompt_kw if kw not in PromptConfig.__dataclass_fields__]
    if unknown:
        fields = ["prompt", "reduction", "members", "seed", *PromptConfig.__dataclass_fields__]
        raise ConfigError(f"make_model got an unknown option {unknown[0]!r}; allowed: {fields}"
                          f"{did_you_mean(unknown[0], fields)}")
    depth = len(vit.blocks)
    if k is not None and not 1 <= k <= (depth if name == "partial" else 8):
        raise ConfigError(f"method={method!r}: k={k} must be in 1..{depth if name == 'partial' else 8}")
    if name in ("vpt-shallow", "vpt-deep", "vpt+bias", "ensemble"):
        base = prompt or PromptConfig(dropout=0.1 if name != "vpt-shallow" else 0.0)
        layers = prompt_kw.pop("layers", None if prompt is None else prompt.layers)
        if name == "vpt-shallow":
            if layers not in (None, "shallow", (0,)):
                raise ConfigError(f"layers={layers!r} contradicts method='vpt-shallow'; use method='vpt-deep' "
                                  f"with layers={layers!r}")
            layers = "shallow"
        elif layers in (None, "shallow"):
            layers = "deep"  # vpt-deep / vpt+bias / ensemble default to every block; a tuple is kept
        changes = dict(prompt_kw, layers=layers)
        if length is not None:
            changes["length"] = length
        cfg = base.replace(**changes)
    else:
        cfg = PromptConfig(length=0)  # methods without prompts ignore prompt settings

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(name, k, vit, num_classes, cfg, reduction, members, seed)
    model.method = method
    model.method_kwargs = {"reduction": reduction} if name == "adapter" else (
        {"members": members} if name == "ensemble" else {})
    return model


def _build(name, k, vit, num_classes, cfg, reduction, members, seed) -> PromptedViT:
    depth = len(vit.blocks)
    tunes_backbone = name in ("full", "partial", "bias", "adapter", "vpt+bias")
    backbone = copy.deepcopy(vit) if tunes_backbone else vit
    if name == "sidetune":
        model: PromptedViT = SideTuneViT(backbone, num_classes)
    elif name == "ensemble":
        model = PromptEnsemble(backbone, cfg, num_classes, members=members, seed=seed)
    else:
        model = PromptedViT(backbone, cfg, num_classes, seed=seed, freeze=True)
    if name == "full":
        backbone.requires_grad_(True)
    elif name == "partial":
        for blk in backbone.blocks[depth - k:]:
            blk.requires_grad_(True)
        backbone.norm.requires_grad_(True)
        backbone.fc_norm.requires_grad_(True)
    elif name in ("bias", "vpt+bias"):
        for pname, p in backbone.named_parameters():
            if pname.endswith(".bias") and not pname.startswith("head."):
                p.requires_grad_(True)
    elif name == "adapter":
        _add_adapters(backbone, reduction)
    elif name == "mlp":
        model.head = mlp_head(vit.embed_dim, num_classes, k)
    if hasattr(backbone, "head"):
        backbone.head.requires_grad_(False)  # the backbone's own head is never used
    return model


def total_params_multiplier(method: str, vit: nn.Module, num_classes: Sequence[int], **kw) -> float:
    """The paper's "total params" column: (shared frozen + sum of per-task params) / backbone params.

    Args:
        num_classes: one entry per task (e.g. the 24 FGVC + VTAB tasks' class counts).
    """
    backbone = sum(p.numel() for n, p in vit.named_parameters() if not n.startswith("head."))
    shared, per_task = None, 0
    for c in num_classes:
        m = make_model(method, vit, c, **kw)
        rep = m.parameter_report()
        per_task += rep["trainable"]
        if shared is None:
            shared = sum(p.numel() for n, p in m.vit.named_parameters()
                         if not p.requires_grad and not n.startswith("head."))
    return (shared + per_task) / backbone


def storage_table(methods: Sequence[str], vit: nn.Module, num_classes: int, **kw) -> List[Dict]:
    """Bytes each method stores per task (a real prompt file) vs a full copy of the model."""
    from .files import save_prompts
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full_bytes = None
        for method in ("full",) + tuple(m for m in methods if m != "full"):
            model = make_model(method, vit, num_classes, **kw)
            path = save_prompts(model, os.path.join(tmp, "m.safetensors"))
            size = os.path.getsize(path)
            full_bytes = full_bytes or size
            rows.append({"method": method, "trainable": model.parameter_report()["trainable"],
                         "bytes": size, "vs_full": size / full_bytes})
    return [r for r in rows if r["method"] in methods]
