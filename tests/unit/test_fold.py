"""BatchNorm folding for inference: same outputs, no BatchNorm left, the caller's model untouched, and a
pairing that does not hold (the conv output also used elsewhere) falls back to the unfolded network."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from headstart.models import build_model, modelio
from headstart.models.fold import fold_batchnorm
from headstart.presets import Preset


def _with_trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running stats and affine params, as after training (fresh ones are 0/1: folding them is trivial)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g).abs() + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("arch", "channels", "size"), [
    ("efficientnet_lite0", 3, 64),  # timm BatchNormAct2d (BN + ReLU6), tf "same"-padded convs
    ("small_cnn", 1, 28),           # plain Conv2d -> BatchNorm2d -> ReLU
    ("resnet18", 3, 64),            # torchvision: downsample Sequential(conv, bn), residual adds
])
def test_folded_copy_matches_and_has_no_batchnorm_left(arch, channels, size):
    """In float64 the folded network is the same function (the fold is exact algebra); in float32 it differs
    by rounding only."""
    model = _with_trained_statistics(build_model(arch, None, 10, in_channels=channels).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    probe, x = (torch.randn(n, channels, size, size, generator=g) for n in (2, 16))
    folded = fold_batchnorm(model, probe)
    assert folded is not model
    assert _batchnorms(model) > 0 and _batchnorms(folded) == 0
    with torch.no_grad():
        want, got = model(x), folded(x)
        assert want.abs().max() > 0.1  # outputs that carry signal, so a wrong fold could not hide
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-2 * scale)
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        model64 = model.double()
        folded64 = fold_batchnorm(model64, probe.double())
        assert folded64 is not model64
        torch.testing.assert_close(folded64(x.double()), model64(x.double()), rtol=0, atol=1e-9 * scale)


class _ConvOutputUsedTwice(nn.Module):
    """conv -> bn, but the conv's output is also added back: its weights must not absorb the bn."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_pairing_that_does_not_hold_falls_back_to_the_unfolded_network(caplog):
    model = _with_trained_statistics(_ConvOutputUsedTwice())
    with caplog.at_level(logging.WARNING, logger="headstart.models.fold"):
        out = fold_batchnorm(model, torch.randn(2, 3, 8, 8))
    assert out is model
    assert _batchnorms(out) == 1
    assert "using the unfolded network" in caplog.text


def test_a_network_without_batchnorm_is_returned_as_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert fold_batchnorm(model, torch.randn(1, 3, 8, 8)) is model


def test_modelio_load_folds_and_predicts_like_the_saved_network(tmp_path: Path):
    built = build_model("small_cnn", None, 3, in_channels=1)
    model = _with_trained_statistics(built.model, seed=3)
    card = modelio.ModelCard(arch="small_cnn", classes=("a", "b", "c"), role="scratch",
                             preset=Preset(image_size=28, channels=1, mean=(0.5,), std=(0.5,)))
    modelio.save(model, card, tmp_path / "model")
    folded, _ = modelio.load(tmp_path / "model")
    plain, _ = modelio.load(tmp_path / "model", fold=False)
    assert _batchnorms(folded) == 0 and _batchnorms(plain) > 0
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain(x), model(x))
