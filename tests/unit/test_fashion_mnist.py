"""Fashion-MNIST import: IDX parsing, checksum verification, stratified val carving, clear errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from headstart.data import fashion_mnist as fm
from headstart.errors import DataError


def _idx3(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, *images.shape) + images.tobytes()


def _idx1(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.tobytes()


def test_parse_idx_roundtrip():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    assert np.array_equal(fm.parse_idx(_idx3(images), "x"), images)
    assert np.array_equal(fm.parse_idx(_idx1(labels), "y"), labels)
    with pytest.raises(DataError, match="not an IDX file"):
        fm.parse_idx(b"\x00\x00\x00\x01" + b"\x00" * 12, "junk")


def test_checksum_mismatch_names_the_file(tmp_path: Path):
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx1(np.zeros(10, dtype=np.uint8))))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: checksum mismatch"):
        fm.verify(bad)
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip"):
        fm.verify(bad)


def test_no_source_says_how_to_get_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fm.locate(None, None)


def test_carve_val_is_stratified_deterministic_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    a, b = fm.carve_val(labels, 5, seed=1), fm.carve_val(labels, 5, seed=1)
    assert np.array_equal(a, b)
    assert np.bincount(labels[a], minlength=10).tolist() == [5] * 10
    assert not np.array_equal(a, fm.carve_val(labels, 5, seed=2))
    with pytest.raises(DataError, match="val_per_class=60"):
        fm.carve_val(labels, 60, seed=1)


def test_system_copy_matches_the_published_checksums():
    if not (fm.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed (make data installs it)")
    labels = fm.parse_idx(fm.verify(fm.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz"), "t10k labels")
    assert len(labels) == 10_000 and np.bincount(labels).tolist() == [1000] * 10
