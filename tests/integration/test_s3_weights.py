"""Weights from s3:// through a real moto S3 server on 127.0.0.1, configured only by environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headstart import storage
from headstart.errors import StorageError, WeightsError
from headstart.models import build_model, lukemelas_to_timm, read_state_dict, save_weights
from headstart.models.efficientnet_lite import imagenet_weights_file
from headstart.models.small_cnn import SmallCNN

from .conftest import fresh_bucket

pytestmark = pytest.mark.integration


@pytest.fixture(params=["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def bucket(request: pytest.FixtureRequest, moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with the endpoint given by one env var or the other (boto3 reads both)."""
    return fresh_bucket(moto, monkeypatch, "weights", endpoint_var=request.param)


def test_build_model_from_s3_safetensors(bucket: str, tmp_path: Path) -> None:
    source = SmallCNN(num_classes=10, in_channels=1)
    uri = f"s3://{bucket}/runs/1/cnn.safetensors"
    assert not storage.exists(uri)
    storage.upload(save_weights(source, tmp_path / "cnn.safetensors"), uri)
    assert storage.exists(uri)
    built = build_model("small_cnn", uri, 4, in_channels=1)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    got = built.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert built.model.classifier.out_features == 4


def test_lukemelas_lite0_weights_from_s3(bucket: str) -> None:
    uri = f"s3://{bucket}/pretrained/efficientnet-lite0.pth"
    storage.upload(imagenet_weights_file(), uri)
    built = build_model("efficientnet_lite0", uri, 3)
    original = lukemelas_to_timm(read_state_dict(imagenet_weights_file()))
    assert torch.equal(
        built.model.state_dict()["blocks.3.2.conv_dw.weight"], original["blocks.3.2.conv_dw.weight"]
    )


def test_fetch_roundtrip_and_missing_objects(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"\x00\x01payload")
    storage.upload(src, f"s3://{bucket}/a/blob.bin")
    got = storage.fetch(f"s3://{bucket}/a/blob.bin", tmp_path / "dl")
    assert got == tmp_path / "dl" / "blob.bin" and got.read_bytes() == src.read_bytes()
    missing = f"s3://{bucket}/a/missing.pt"
    with pytest.raises(StorageError, match=f"{missing}: no such object"):
        storage.fetch(missing, tmp_path)
    with pytest.raises(WeightsError, match=f"{missing}: no such object"):
        build_model("resnet18", missing, 3)
    with pytest.raises(StorageError, match="s3://no-such-bucket-x/k: no such object or bucket.*credentials"):
        storage.upload(src, "s3://no-such-bucket-x/k")
