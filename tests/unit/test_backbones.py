"""build_model: real offline ImageNet weights, torchvision's loader via a TORCH_HOME cache, files, errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.hub
from safetensors.torch import load_file
from skimage import data
from skimage.transform import resize
from torchvision.models import ResNet18_Weights, resnet18

from headstart.errors import ConfigError, WeightsError
from headstart.models import (
    build_model,
    head_and_backbone_params,
    load_weights,
    lukemelas_to_timm,
    read_state_dict,
    save_weights,
)
from headstart.models.efficientnet_lite import imagenet_weights_file
from headstart.models.small_cnn import SmallCNN

# ImageNet-1k: 967 espresso, 968 cup, 504 coffee mug. Lite0 gives skimage's coffee 967 (p ~ 0.91).
COFFEE_CLASSES = {967, 968, 504}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class Payload:
    """Unpickling this creates `marker`: the code-execution attack weights_only=True must stop."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _poisoned(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload(marker)}, path)
    return path


def _coffee(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    img = resize(data.coffee(), (224, 224), anti_aliasing=True)  # float in [0, 1]
    x = (img - np.array(mean)) / np.array(std)  # mean = std = 0.5 -> [-1, 1]
    return torch.from_numpy(x).permute(2, 0, 1).float().unsqueeze(0)


def test_lite0_imagenet_weights_map_strictly_and_see_espresso() -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    result = model.load_state_dict(lukemelas_to_timm(read_state_dict(imagenet_weights_file())), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        top1 = int(model.eval()(_coffee((0.5,) * 3, (0.5,) * 3)).argmax())
    assert top1 in COFFEE_CLASSES, top1


def test_lite0_imagenet_backbone_kept_head_replaced() -> None:
    built = build_model("efficientnet_lite0", "imagenet", 5)
    original = lukemelas_to_timm(read_state_dict(imagenet_weights_file()))
    state = built.model.state_dict()
    assert torch.equal(state["conv_stem.weight"], original["conv_stem.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], original["blocks.6.0.conv_pwl.weight"])
    assert state["classifier.weight"].shape == (5, 1280)
    assert built.head == ["classifier"] and built.mean == built.std == (0.5, 0.5, 0.5)
    head, backbone = head_and_backbone_params(built)
    assert [p.shape for p in head] == [(5, 1280), (5,)]
    assert len(head) + len(backbone) == len(list(built.model.parameters()))


def test_lite0_lukemelas_file_is_mapped_automatically() -> None:
    built = build_model("efficientnet_lite0", str(imagenet_weights_file()), 3)
    original = lukemelas_to_timm(read_state_dict(imagenet_weights_file()))
    assert torch.equal(built.model.state_dict()["bn2.running_var"], original["bn2.running_var"])


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; any download attempt fails as it would offline."""

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"offline: {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def _cache_file(torch_home: Path) -> Path:
    return torch_home / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name


@pytest.mark.parametrize("weights", ["imagenet", "IMAGENET1K_V1"])
def test_torchvision_weights_come_through_torch_home_cache(torch_home: Path, weights: str) -> None:
    reference = resnet18().state_dict()  # random, standing in for the real ImageNet file
    _cache_file(torch_home).parent.mkdir(parents=True)
    torch.save(reference, _cache_file(torch_home))
    built = build_model("resnet18", weights, 7)
    assert torch.equal(built.model.state_dict()["layer4.1.conv2.weight"], reference["layer4.1.conv2.weight"])
    assert built.model.fc.out_features == 7 and built.head == ["fc"]
    assert built.mean == (0.485, 0.456, 0.406) and built.std == (0.229, 0.224, 0.225)


def test_torchvision_offline_without_cache_says_what_to_do(torch_home: Path) -> None:
    with pytest.raises(WeightsError, match="could not be fetched.*TORCH_HOME"):
        build_model("resnet18", "imagenet", 3)


def test_poisoned_torch_home_cache_is_refused(torch_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _poisoned(_cache_file(torch_home), marker)
    with pytest.raises(WeightsError):
        build_model("resnet18", "imagenet", 3)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_loads_backbone_and_ignores_old_head(tmp_path: Path, suffix: str) -> None:
    source = SmallCNN(num_classes=10, in_channels=1)
    path = tmp_path / f"cnn{suffix}"
    if suffix == ".pt":
        torch.save(source.state_dict(), path)
    else:
        save_weights(source, path)
    built = build_model("small_cnn", str(path), 3, in_channels=1)
    assert torch.equal(built.model.state_dict()["features.2.3.weight"], source.features[2][3].weight)
    assert built.model.classifier.out_features == 3


def test_malicious_pickle_weights_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _poisoned(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError, match=r"evil\.pt: refused.*weights_only=True"):
        build_model("resnet18", str(path), 3)
    assert not marker.exists()


def test_wrong_keys_and_shapes_name_file_and_keys(tmp_path: Path) -> None:
    rgb = save_weights(SmallCNN(num_classes=3, in_channels=3), tmp_path / "rgb.safetensors")
    with pytest.raises(WeightsError, match=r"rgb\.safetensors.*wrong shapes.*features\.0\.0\.weight"):
        build_model("small_cnn", str(rgb), 3, in_channels=1)
    with pytest.raises(
        WeightsError, match=r"rgb\.safetensors.*missing keys: bn1\..*unexpected keys: classifier"
    ):
        build_model("resnet18", str(rgb), 3)


def test_small_cnn_native_28px_grayscale() -> None:
    built = build_model("small_cnn", None, 10, in_channels=1)
    assert built.in_channels == 1 and built.mean == built.std == (0.5,)
    assert built.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert built.model(torch.zeros(2, 1, 40, 40)).shape == (2, 10)


def test_save_and_load_weights_roundtrip(tmp_path: Path) -> None:
    model = build_model("small_cnn", "none", 4, in_channels=1).model.eval()
    path = save_weights(model, tmp_path / "out" / "model.safetensors")
    assert set(load_file(str(path))) == set(model.state_dict())
    clone = load_weights(SmallCNN(num_classes=4, in_channels=1).eval(), path)
    x = torch.randn(1, 1, 28, 28)
    assert torch.equal(clone(x), model(x))
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_weights(SmallCNN(num_classes=5, in_channels=1), path)


def test_clear_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resnet9000.*efficientnet_lite0.*small_cnn.*resnet18"):
        build_model("resnet9000", None, 3)
    with pytest.raises(ConfigError, match="in_channels=1.*3 channels"):
        build_model("efficientnet_lite0", "imagenet", 3, in_channels=1)
    with pytest.raises(WeightsError, match="missing.pt: weights file not found"):
        build_model("resnet18", str(tmp_path / "missing.pt"), 3)
    with pytest.raises(ConfigError, match="IMAGENET9.*IMAGENET1K_V1"):
        build_model("resnet18", "IMAGENET9", 3)


def test_a_small_cnn_process_does_not_import_timm_or_torchvision():
    """They cost ~1.4 s of start-up in every small-CNN process (serving check, CLI, workers) that never uses them."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from headstart.models import modelio\n"
            "from headstart.models import build_model\n"
            "from headstart.models.fold import fold_batchnorm\n"
            "import torch\n"
            "m = build_model('small_cnn', None, 3, in_channels=1).model.eval()\n"
            "fold_batchnorm(m, torch.randn(2, 1, 28, 28))\n"
            "print(sorted(k for k in ('timm', 'torchvision') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
