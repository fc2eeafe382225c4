"""Backbones: frozen timm ViTs by name (``load_backbone``), their weight files, the shipped tiny
ViT's pretraining recipe, and the offline DINOv2 converter (imported only when used)."""
from .load import (BACKBONES, DEFAULT_BACKBONE, BackboneInfo, backbone_name, data_config, fingerprint,
                   list_backbones, load_backbone, load_tiny, load_tiny_dino)
from .weights import atomic_save, load_weights_file, tensor_digest

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "load_tiny_dino", "BackboneInfo", "backbone_name", "data_config", "fingerprint", "list_backbones",
           "load_backbone", "load_tiny", "atomic_save", "load_weights_file", "tensor_digest"]
