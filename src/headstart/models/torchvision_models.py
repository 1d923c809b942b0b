"""Any torchvision classification model by name, with its official weights or none.

Weights come through torchvision's own loader (TORCH_HOME cache, then download). The cached file
is first opened with weights_only=True, because torchvision itself unpickles it without that guard.
"""

from __future__ import annotations

import pickle
from functools import cache

import torchvision
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from headstart.errors import ConfigError, WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@cache
def names() -> tuple[str, ...]:
    """Classification models only (detection, video, ... live in submodules and are excluded)."""
    return tuple(tvm.list_models(module=torchvision.models))


def resolve_weights(arch: str, name: str) -> WeightsEnum:
    """'imagenet' -> the arch's DEFAULT weights; an enum member name ('IMAGENET1K_V1') -> that member."""
    enum = tvm.get_model_weights(arch)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    key = "DEFAULT" if name.lower() == "imagenet" else name.split(".")[-1].upper()
    if key not in enum.__members__:
        raise ConfigError(
            f"weights={name!r} is not a weights name for {arch}; use 'imagenet', one of {members}, "
            "'none', or a local/s3:// state_dict file."
        )
    return enum[key]


def stats(weights: WeightsEnum | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std the weights were trained with; ImageNet statistics when there are none."""
    if weights is None:
        return IMAGENET_MEAN, IMAGENET_STD
    preset = weights.transforms()
    return tuple(float(v) for v in preset.mean), tuple(float(v) for v in preset.std)


def create(arch: str, weights: WeightsEnum | None) -> nn.Module:
    """Build the model with its original head; fetch failures become WeightsError."""
    if weights is None:
        return tvm.get_model(arch, weights=None)
    try:
        weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise WeightsError(
            f"{arch} weights {weights} could not be fetched or were refused from {weights.url} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}). Offline? Pass a local or "
            "s3:// state_dict file as weights, or put the file in <TORCH_HOME>/hub/checkpoints/."
        ) from exc
    try:
        return tvm.get_model(arch, weights=weights)
    except RuntimeError as exc:  # a cached file that is a state_dict, but not this model's
        raise WeightsError(
            f"{arch} weights {weights}: the cached file does not fit the model "
            f"({' '.join(str(exc).split())[:300]}). Delete it from <TORCH_HOME>/hub/checkpoints/ and retry."
        ) from exc


def last_linear(model: nn.Module) -> str:
    """Name of the final nn.Linear (fc, classifier.N, heads.head, ...): the classification head."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no Linear classification head; pick another arch.")
    return linears[-1]


def reset_head(model: nn.Module, head: str, num_classes: int) -> None:
    old = model.get_submodule(head)
    assert isinstance(old, nn.Linear)
    model.set_submodule(head, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def set_in_channels(model: nn.Module, in_channels: int) -> None:
    """Swap the first conv for one taking `in_channels` (random init only)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,  # type: ignore[arg-type]
                    padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    model.set_submodule(name, new)
