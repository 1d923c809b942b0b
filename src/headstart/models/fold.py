"""Inference copies of a network with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, y = (x - mean) / sqrt(var + eps) * w + b, so it
can be merged into the weights and bias of the convolution that feeds it. The folded network computes
the same function to float rounding (~1e-6) without the extra pass over every activation map: for
EfficientNet-Lite0 on CPU the BatchNorm(+ReLU6) modules took ~26% of inference time
(benchmarks/inference.py measures the before/after ratio).

A convolution and a BatchNorm are paired only when they are consecutive children of the same module
(the order in which every model Headstart builds registers them: timm's EfficientNet blocks,
torchvision's ResNets, the small CNN), the BatchNorm follows in the forward pass, and their channel
counts match. `fold_batchnorm` then checks the folded copy against the original on a probe batch and
returns the original if they disagree, so an architecture that breaks the pairing assumption is slower,
never wrong.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

TOLERANCE = 1e-2  # max |difference| of the outputs, relative to their largest magnitude (or 1)


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of a BatchNorm once its affine map is in the conv: nothing, or timm's fused activation."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    if type(bn) is BatchNormAct2d:  # forward: batch_norm -> drop -> act
        return nn.Sequential(bn.drop, bn.act)
    return None  # an unknown subclass may do more than batch_norm: leave it alone


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """torch's own conv+BN fusion, fed float64 copies so the folded weights carry no extra rounding."""
    assert bn.running_mean is not None and bn.running_var is not None
    dtype = conv.weight.dtype

    def f64(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().double()

    weight, bias = fuse_conv_bn_weights(f64(conv.weight), f64(conv.bias), f64(bn.running_mean),
                                        f64(bn.running_var), bn.eps, f64(bn.weight), f64(bn.bias))
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None and bn.num_features == conv.out_channels)


def fold_in_place(model: nn.Module) -> int:
    """Fold every (conv, BatchNorm) pair of consecutive children; returns how many were folded."""
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (name, bn) in zip(children, children[1:], strict=False):
            if not _foldable(conv, bn):
                continue
            rest = _bn_replacement(bn)  # type: ignore[arg-type]
            if rest is not None:  # None: a BatchNorm subclass that may do more; left as it is
                _fold_pair(conv, bn)  # type: ignore[arg-type]
                setattr(parent, name, rest)
                folded += 1
    return folded


@torch.no_grad()
def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> nn.Module:
    """An eval-mode copy of `model` with BatchNorms folded, if it computes the same function as `model` on
    `probe` (an NCHW batch); otherwise `model` itself. The caller's model is never changed.

    The folded weights are computed in float64. The check compares outputs in the model's own precision:
    a right fold differs by rounding (1e-5 of the largest logit for trained Headstart models, 1e-3 for a
    random deep network with extreme BatchNorm statistics), a wrong pairing by O(1)."""
    model.eval()
    folded = copy.deepcopy(model)
    if fold_in_place(folded) == 0:
        return model
    folded.eval()
    first = next(model.parameters())
    x = probe.to(first.device, first.dtype)
    try:
        want, got = model(x).double(), folded(x).double()
    except RuntimeError as exc:  # e.g. a probe smaller than the network accepts
        log.warning("BatchNorm folding not checked (%s); using the unfolded network", exc)
        return model
    err = (want - got).abs().max().item()
    if not torch.isfinite(got).all() or err > TOLERANCE * max(1.0, want.abs().max().item()):
        log.warning("BatchNorm folding changed the outputs (max |diff| %.3g); using the unfolded network", err)
        return model
    return folded
