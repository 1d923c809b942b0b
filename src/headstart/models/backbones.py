"""One entry point, `build_model`, for every architecture the pipeline trains.

Fine-tune and scratch candidates differ only in `arch` and `weights`; the result carries the
normalisation the weights expect and the names of the fresh head, so the training engine can give
the head its own learning rate and freeze the backbone for a linear-probe warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from headstart.errors import ConfigError
from headstart.models import efficientnet_lite as lite
from headstart.models import small_cnn
from headstart.models.weights import fetch_state_dict, in_prefixes, is_weights_file, load_checked, read_state_dict


@dataclass
class BuiltModel:
    """A model with a freshly sized head, plus what preprocessing and the optimiser need to know."""

    model: nn.Module
    arch: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int
    head: list[str]


def _tv():
    """torchvision, imported when a torchvision arch is asked for: a small-CNN process never pays for it."""
    from headstart.models import torchvision_models

    return torchvision_models


def choices() -> list[str]:
    return [lite.ARCH, small_cnn.ARCH, *_tv().names()]


def build_model(arch: str, weights: str | None, num_classes: int, *, in_channels: int = 3) -> BuiltModel:
    """Build `arch` with `weights` ('imagenet', a weights enum name, a local/s3 file, or None/'none').

    File weights are a state_dict for the backbone: head keys in the file are ignored (the head is
    replaced), every other key and shape must match.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
    if in_channels < 1:
        raise ConfigError(f"in_channels={in_channels}: must be 1 (grayscale) or 3 (RGB).")
    spec = None if weights is None or weights.strip().lower() in ("", "none") else weights.strip()
    named = spec is not None and not is_weights_file(spec)
    if named and in_channels != 3 and arch != small_cnn.ARCH:
        raise ConfigError(
            f"in_channels={in_channels} with pre-trained weights={spec!r} for {arch}: pre-trained backbones "
            "take 3 channels; keep in_channels=3 (grayscale is replicated to RGB) or use weights=none."
        )
    if arch == small_cnn.ARCH:
        return _small_cnn(spec, named, num_classes, in_channels)
    if arch == lite.ARCH:
        return _efficientnet_lite0(spec, named, num_classes, in_channels)
    if arch in _tv().names():
        return _torchvision(arch, spec, named, num_classes, in_channels)
    raise ConfigError(f"arch={arch!r} is unknown; choose one of: {', '.join(choices())}.")


def _small_cnn(spec: str | None, named: bool, num_classes: int, in_channels: int) -> BuiltModel:
    if named:
        raise ConfigError(f"small_cnn has no pre-trained weights named {spec!r}; use weights=none or a file.")
    model = small_cnn.SmallCNN(num_classes=num_classes, in_channels=in_channels)
    if spec is not None:
        load_checked(model, fetch_state_dict(spec), spec, skip=[small_cnn.HEAD])
        model.reset_classifier(num_classes)
    half = (0.5,) * in_channels
    return BuiltModel(model, small_cnn.ARCH, half, half, in_channels, [small_cnn.HEAD])


def _efficientnet_lite0(spec: str | None, named: bool, num_classes: int, in_channels: int) -> BuiltModel:
    model = lite.create(in_channels)
    if named:
        if spec is None or spec.lower() != "imagenet":
            raise ConfigError(f"weights={spec!r}: efficientnet_lite0 offers 'imagenet', 'none' or a file.")
        path = lite.imagenet_weights_file()
        load_checked(model, lite.lukemelas_to_timm(read_state_dict(path)), str(path))  # strict, head too
    elif spec is not None:
        state = fetch_state_dict(spec)
        load_checked(
            model, lite.lukemelas_to_timm(state) if lite.is_lukemelas(state) else state, spec, [lite.HEAD]
        )
    model.reset_classifier(num_classes)  # type: ignore[operator]
    half = (0.5,) * in_channels
    return BuiltModel(model, lite.ARCH, half, half, in_channels, [lite.HEAD])


def _torchvision(arch: str, spec: str | None, named: bool, num_classes: int, in_channels: int) -> BuiltModel:
    tv = _tv()
    enum = tv.resolve_weights(arch, spec) if named and spec is not None else None
    model = tv.create(arch, enum)
    mean, std = tv.stats(enum)
    if in_channels != 3:
        tv.set_in_channels(model, in_channels)
        mean, std = (sum(mean) / 3,) * in_channels, (sum(std) / 3,) * in_channels
    head = tv.last_linear(model)
    if spec is not None and not named:
        load_checked(model, fetch_state_dict(spec), spec, skip=[head])
    tv.reset_head(model, head, num_classes)
    return BuiltModel(model, arch, mean, std, in_channels, [head])


def head_and_backbone_params(built: BuiltModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (fresh head, backbone) for per-group learning rates and freezing."""
    head: list[nn.Parameter] = []
    backbone: list[nn.Parameter] = []
    for name, param in built.model.named_parameters():
        (head if in_prefixes(name, built.head) else backbone).append(param)
    return head, backbone


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image of shape (C, H, W), counted by torch's FlopCounterMode."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
