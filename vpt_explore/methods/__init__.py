"""The transfer methods (paper Table 1): one registry of specs, ``make_model``, ``load_model`` (its
inverse for prompt files), the modules methods add, and what each costs."""
from .cost import storage_table, total_params_multiplier
from .factory import METHODS, make_model
from .load import load_model
from .modules import Adapter, PromptEnsemble, SideTuneViT, mlp_head
from .registry import MethodSpec, default_base_lr, method_names, parse_method, register_method, unregister_method

__all__ = ["storage_table", "total_params_multiplier", "METHODS", "make_model", "load_model", "Adapter",
           "PromptEnsemble", "SideTuneViT", "mlp_head", "MethodSpec", "default_base_lr", "method_names",
           "parse_method", "register_method", "unregister_method"]
