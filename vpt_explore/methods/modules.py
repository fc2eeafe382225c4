"""The modules the transfer methods add to a frozen ViT (adapter, mlp head, side network, prompt
ensemble) and one builder per method (read by ``registry.py``)."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..config import PromptConfig
from ..errors import ConfigError
from ..model.conv_prompts import ConvPadPrompter, first_conv
from ..model.input_prompted import InputPromptedModel, backbone_kind, input_size
from ..model.pixel_prompts import FixedPatchPrompter, PadPrompter, RandomPatchPrompter
from ..model.prompted import PromptedViT
from ..model.swin_prompts import PromptedSwin


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

    def prompts_for_block(self, i: int, B: int):
        """(k*B', p, D): copy j of the batch (rows j*B' .. (j+1)*B') gets member j's prompts."""
        k = len(self.members)
        Ps = [m.layer_prompts(i) for m in self.members]
        if Ps[0] is None:
            return None
        P = torch.stack(Ps).repeat_interleave(B // k, dim=0)              # (k*B', p, D)
        return self.prompt_dropout(P)

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


# ----------------------------------------------------------------------------- one builder per method
# build(backbone, num_classes, cfg, k, options) -> model. ``backbone`` is already a copy for methods
# that tune it; the PromptedViT is built first, so seeded draws happen in the same order for all.
def _plain(backbone, num_classes, cfg, options) -> PromptedViT:
    return PromptedViT(backbone, cfg, num_classes, seed=options["seed"], freeze=True)


def build_frozen(backbone, num_classes, cfg, k, options) -> nn.Module:
    """linear, vpt-shallow, vpt-deep: the backbone stays frozen; prompts (if any) and head train.

    A ViT gets token prompts (PromptedViT), a Swin window prompts (PromptedSwin); a ConvNet has no
    tokens, so only its linear probe is built here (``make_model`` refuses the prompt methods)."""
    kind = backbone_kind(backbone)
    if kind == "swin":
        return PromptedSwin(backbone, cfg, num_classes, seed=options["seed"])
    if kind == "convnet":
        return InputPromptedModel(backbone, None, num_classes, cfg=cfg)
    return _plain(backbone, num_classes, cfg, options)


def _input_prompted(backbone, num_classes, cfg, options, make) -> InputPromptedModel:
    """A frozen backbone with the prompter ``make(p, (H, W), C, generator)`` on its input."""
    gen = torch.Generator().manual_seed(options["seed"])
    size = options.get("image_size") or input_size(backbone)
    prompter = make(cfg.length, tuple(size), 3, gen)
    return InputPromptedModel(backbone, prompter, num_classes, cfg=cfg)


def build_pad_prompt(backbone, num_classes, cfg, k, options) -> InputPromptedModel:
    """Bahng et al.'s pad prompter: a learned frame of width p added onto the image's border."""
    return _input_prompted(backbone, num_classes, cfg, options, PadPrompter)


def build_fixed_patch(backbone, num_classes, cfg, k, options) -> InputPromptedModel:
    """Bahng et al.'s fixed patch: a learned p x p patch added at the top-left corner."""
    return _input_prompted(backbone, num_classes, cfg, options, FixedPatchPrompter)


def build_random_patch(backbone, num_classes, cfg, k, options) -> InputPromptedModel:
    """Bahng et al.'s random patch: the p x p patch at a random place per image while training
    (seeded by ``seed``), at the top-left corner in eval mode."""
    return _input_prompted(backbone, num_classes, cfg, options,
                           lambda *a: RandomPatchPrompter(*a, seed=options["seed"]))


def build_conv_pad(backbone, num_classes, cfg, k, options) -> InputPromptedModel:
    """VPT on ConvNets (Sec. 4.2): learned pixels of width p around the image (it grows by 2p)."""
    bound = ConvPadPrompter.stem_bound(first_conv(backbone))
    return _input_prompted(backbone, num_classes, cfg, options,
                           lambda *a: ConvPadPrompter(*a[:3], bound=bound, generator=a[3]))


def build_full(backbone, num_classes, cfg, k, options) -> PromptedViT:
    model = _plain(backbone, num_classes, cfg, options)
    backbone.requires_grad_(True)
    return model


def build_partial(backbone, num_classes, cfg, k, options) -> PromptedViT:
    """Partial-k: the last k blocks, the final norm and the head train."""
    model = _plain(backbone, num_classes, cfg, options)
    for blk in backbone.blocks[len(backbone.blocks) - k:]:
        blk.requires_grad_(True)
    backbone.norm.requires_grad_(True)
    backbone.fc_norm.requires_grad_(True)
    return model


def build_mlp(backbone, num_classes, cfg, k, options) -> PromptedViT:
    model = _plain(backbone, num_classes, cfg, options)
    model.head = mlp_head(backbone.embed_dim, num_classes, k)
    return model


def build_bias(backbone, num_classes, cfg, k, options) -> PromptedViT:
    """BitFit (bias) and vpt+bias: every bias of the backbone trains."""
    model = _plain(backbone, num_classes, cfg, options)
    for pname, p in backbone.named_parameters():
        if pname.endswith(".bias") and not pname.startswith("head."):
            p.requires_grad_(True)
    return model


def build_adapter(backbone, num_classes, cfg, k, options) -> PromptedViT:
    model = _plain(backbone, num_classes, cfg, options)
    _add_adapters(backbone, options["reduction"])
    return model


def build_sidetune(backbone, num_classes, cfg, k, options) -> PromptedViT:
    return SideTuneViT(backbone, num_classes)


def build_ensemble(backbone, num_classes, cfg, k, options) -> PromptedViT:
    return PromptEnsemble(backbone, cfg, num_classes, members=options["members"], seed=options["seed"])
