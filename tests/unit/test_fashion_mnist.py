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


@pytest.fixture
def idx_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four tiny IDX files (10 classes, 4 train and 2 test images each) that the checksums accept."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": _idx3(rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": _idx1(np.repeat(np.arange(10, dtype=np.uint8), 4)),
        "t10k-images-idx3-ubyte.gz": _idx3(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": _idx1(np.repeat(np.arange(10, dtype=np.uint8), 2)),
    }
    source = tmp_path / "idx"
    source.mkdir()
    files = {}
    for name, payload in arrays.items():
        raw = gzip.compress(payload, mtime=0)
        (source / name).write_bytes(raw)
        files[name] = (fm._md5(raw), fm._md5(payload))
    monkeypatch.setattr(fm, "FILES", files)
    return source


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_never_deletes_a_users_own_dataset(tmp_path: Path, idx_source: Path):
    data = tmp_path / "data"
    (data / "train" / "cat").mkdir(parents=True)
    (data / "train" / "cat" / "mine.png").write_bytes(b"my own image")
    with pytest.raises(DataError, match=r"data: not replaced .*no record of an import.* `dvc add .*data`"):
        fm.import_fashion_mnist(data, val_per_class=1, source=idx_source)
    assert _files(data) == {"train/cat/mine.png": b"my own image"}
    assert not (tmp_path / "data.importing").exists()


def test_import_rebuilds_its_own_stale_output(tmp_path: Path, idx_source: Path):
    data = tmp_path / "data"
    first = fm.import_fashion_mnist(data, val_per_class=1, source=idx_source)
    assert first.counts["val"] == 10
    assert not any(p.name.startswith(".") for p in data.rglob("*"))  # the record lives outside: DVC hash
    assert fm.record_path(data) == tmp_path / ".headstart" / "import" / "data.json"
    again = fm.import_fashion_mnist(data, val_per_class=2, source=idx_source)  # e.g. data.val_per_class changed
    assert again.counts["val"] == 20
    assert len(list((data / "val").rglob("*.png"))) == 20
    fm.check_replaceable(data)  # the new output is recorded too


def test_import_keeps_images_a_user_added_to_or_edited_in_an_import(tmp_path: Path, idx_source: Path):
    data = tmp_path / "data"
    fm.import_fashion_mnist(data, val_per_class=1, source=idx_source)
    (data / "train" / "cat").mkdir()
    (data / "train" / "cat" / "mine.png").write_bytes(b"my own image")
    with pytest.raises(DataError, match=r"train/cat/ is not from the import \(1 files\)"):
        fm.import_fashion_mnist(data, val_per_class=2, source=idx_source)
    assert (data / "train" / "cat" / "mine.png").read_bytes() == b"my own image"
    assert len(list((data / "val").rglob("*.png"))) == 10

    (data / "train" / "cat" / "mine.png").unlink()
    (data / "train" / "cat").rmdir()
    edited = next((data / "train" / "coat").iterdir())
    edited.write_bytes(b"relabelled by hand")
    with pytest.raises(DataError, match="files were edited since the import wrote them"):
        fm.import_fashion_mnist(data, val_per_class=2, source=idx_source)
    assert edited.read_bytes() == b"relabelled by hand"


def test_import_leaves_a_staging_folder_it_did_not_make(tmp_path: Path, idx_source: Path):
    (tmp_path / "data.importing").mkdir()
    (tmp_path / "data.importing" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"data\.importing: exists and was not made by the import"):
        fm.import_fashion_mnist(tmp_path / "data", val_per_class=1, source=idx_source)
    assert (tmp_path / "data.importing" / "notes.txt").read_text() == "mine"
