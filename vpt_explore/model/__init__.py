"""The prompted model: the token layout, PromptedViT, the exact prefix (K/V) path, multi-task
batches, prompt files, and ``vit_math`` (the paper's equations written out, as a reference)."""
from .multitask import MultiTaskVPT
from .prefix import PrefixViT
from .prompted import PromptedViT

__all__ = ["MultiTaskVPT", "PrefixViT", "PromptedViT"]
