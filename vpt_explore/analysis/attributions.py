"""Attributions with captum: which pixels, and which prompt tokens, drive a prediction.

Read-only: models are put in eval mode for the call and restored after (``probes.eval_mode``).
captum is imported lazily; without it a MissingPackageError names the install command.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError, bad_choice, require_package
from .probes import _backbone, _hooks, _sl, eval_mode, num_prompts_at, token_layout

def _targets(targets: Union[int, Sequence[int], torch.Tensor], B: int) -> torch.Tensor:
    t = torch.as_tensor(targets, dtype=torch.long)
    return t.expand(B).clone() if t.ndim == 0 else t


def _baseline_images(model: nn.Module, images: torch.Tensor, baseline: str) -> torch.Tensor:
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline != "black":
        raise bad_choice("baseline", baseline, ("zero", "black"))
    from ..data.dataset import data_config
    dc = data_config(_backbone(model))
    mean = torch.tensor(dc["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(dc["std"]).view(1, -1, 1, 1)
    return ((0 - mean) / std).expand_as(images).clone()      # black pixels, normalised


def attributions(model: nn.Module, images: torch.Tensor, targets, method: str = "ig",
                 n_steps: int = 16, baseline: str = "zero") -> torch.Tensor:
    """Pixel attributions for the target logits with captum (complements Fig. 9 qualitatively).

    Args:
        method: ``"ig"`` Integrated Gradients (summed over colour channels, so the sum over
            pixels approximates logit(x) - logit(baseline)); ``"saliency"`` |gradient|, max over
            channels; ``"occlusion"`` one patch of zeros at a time, channel mean.
        baseline: ``"zero"`` (the mean image, in normalised space) or ``"black"``.

    Returns:
        (B, H, W) float tensor, detached.
    """
    attr = require_package("captum.attr", "captum", "attributions")
    t = _targets(targets, images.shape[0])
    images = images.detach().clone().requires_grad_(True)  # captum wants a leaf needing grad
    with eval_mode(model):
        if method == "ig":
            base = _baseline_images(model, images, baseline)
            a = attr.IntegratedGradients(model).attribute(images, base, target=t, n_steps=n_steps)
            return a.sum(1).detach().to(images.dtype)             # captum < 0.8 returns float64
        if method == "saliency":
            return attr.Saliency(model).attribute(images, target=t, abs=True).amax(1).detach()
        if method == "occlusion":
            C, (ph, pw) = images.shape[1], _backbone(model).patch_embed.patch_size
            a = attr.Occlusion(model).attribute(images, sliding_window_shapes=(C, ph, pw),
                                                strides=(C, ph, pw), target=t, baselines=0.0)
            return a.mean(1).detach()
    raise bad_choice("method", method, ("ig", "saliency", "occlusion"))


def prompt_attributions(model: nn.Module, images: torch.Tensor, targets, layer: Optional[int] = None,
                        method: str = "ig", n_steps: int = 16) -> torch.Tensor:
    """How much each prompt token at the input of block ``layer`` drives the target logit.

    Args:
        layer: block index; default the first prompted block.
        method: ``"ig"``: Integrated Gradients over a per-token scale s in [0, 1] of the prompt
            tokens (s = 0 zeroes them at that layer), so each row sums to about
            logit(prompts) - logit(prompts zeroed); ``"ixg"``: captum LayerGradientXActivation on
            the block input, summed over D.

    Returns:
        (B, p) float tensor, detached.
    """
    attr = require_package("captum.attr", "captum", "attributions")
    blocks = getattr(model, "prompt_blocks", ())
    layer = blocks[0] if layer is None and blocks else layer
    p = num_prompts_at(model, layer) if layer is not None else 0
    if p == 0:
        raise ConfigError(f"block {layer} has no prompt tokens (location='add'/'concat-channel', "
                          f"no prompts, or a block before the first prompted one)")
    blk, B = _backbone(model).blocks[layer], images.shape[0]
    t = _targets(targets, B)
    with eval_mode(model):
        if method == "ixg":
            a = attr.LayerGradientXActivation(model, blk).attribute(
                images, target=t, attribute_to_layer_input=True)
            a = a[0] if isinstance(a, tuple) else a                  # (B, N, D)
            return a.sum(-1)[:, _sl(token_layout(model, layer, a.shape[1]).prompts)].detach()
        if method != "ig":
            raise bad_choice("method", method, ("ig", "ixg"))
        state = {}

        def scale_prompts(_m, args):                                 # args[0] (k, N, D)
            x, s = args[0], state["s"]                               # s (k, p)
            r = token_layout(model, layer, x.shape[1]).prompts
            one = torch.ones_like(x[:, :, 0])                         # (k, N)
            mult = torch.cat([one[:, :r.start], s, one[:, r.stop:]], dim=1)
            return (x * mult[..., None],) + tuple(args[1:])

        def forward(s, imgs):
            state["s"] = s
            return model(imgs)

        with _hooks() as handles:
            handles.append(blk.register_forward_pre_hook(scale_prompts))
            a = attr.IntegratedGradients(forward).attribute(
                torch.ones(B, p), torch.zeros(B, p), target=t, additional_forward_args=(images,),
                n_steps=n_steps)
        return a.detach().to(images.dtype)                           # captum < 0.8: float64
