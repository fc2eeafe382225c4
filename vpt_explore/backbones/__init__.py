"""Backbones: frozen timm ViTs by name (``load_backbone``), their weight files, the shipped tiny
ViT's pretraining recipe, and the offline DINOv2 converter (imported only when used)."""
from .load import (BACKBONES, BackboneInfo, backbone_name, data_config, fingerprint, list_backbones,
                   load_backbone, load_tiny)
from .weights import atomic_save, load_weights_file, tensor_digest

__all__ = ["BACKBONES", "BackboneInfo", "backbone_name", "data_config", "fingerprint", "list_backbones",
           "load_backbone", "load_tiny", "atomic_save", "load_weights_file", "tensor_digest"]
