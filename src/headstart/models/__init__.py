"""Model construction and weight files: `build_model` for every arch, safetensors for trained models."""

from headstart.models.backbones import BuiltModel, build_model, choices, count_params, flops, head_and_backbone_params
from headstart.models.efficientnet_lite import lukemelas_to_timm
from headstart.models.weights import load_weights, read_state_dict, save_weights

__all__ = ["BuiltModel", "build_model", "choices", "count_params", "flops", "head_and_backbone_params", "load_weights",
           "lukemelas_to_timm", "read_state_dict", "save_weights"]
