"""Build the default dataset, Fashion-MNIST, as an ImageFolder from the four IDX files.

The import is deterministic (fixed split rule, fixed PNG encoder settings) so that a fresh
machine reproduces exactly the directory hash committed in data.dvc.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from headstart import runtime
from headstart.errors import DataError
from headstart.progress import progress_enabled

CLASSES = (
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
UPSTREAM = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# Published MD5 of the upstream .gz files, and MD5 of their decompressed IDX payload.
# Debian's package recompresses without the gzip FNAME field (the .gz is 23-24 bytes shorter),
# so for it the payload checksum is what proves the content is the published one.
FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
HOW_TO_GET = (
    "Fashion-MNIST IDX files not found. Either install the Debian package "
    "(`apt-get install dataset-fashion-mnist`, files land in /usr/share/datasets/fashion-mnist), "
    "or download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist "
    "into a folder and set FASHION_MNIST_DIR to it."
)


STAGING_MARK = ".headstart-import-staging"  # first file of a staging folder: proves the import made it


@dataclass(frozen=True)
class ImportResult:
    out_dir: Path
    source: str
    counts: dict[str, int]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify(path: Path) -> bytes:
    """Return the decompressed IDX payload of one file after checking its published checksum."""
    gz_md5, payload_md5 = FILES[path.name]
    raw = path.read_bytes()
    try:
        payload = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); re-download it.") from exc
    if _md5(raw) != gz_md5 and _md5(payload) != payload_md5:
        raise DataError(
            f"{path}: checksum mismatch (md5 {_md5(raw)}, expected {gz_md5}); "
            "the file is corrupt or not the published Fashion-MNIST. Re-download it."
        )
    return payload


def _candidate_dirs(source: Path | None) -> list[Path]:
    dirs = [source] if source else []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    dirs.append(SYSTEM_DIR)
    return dirs


def locate(source: Path | None = None, download_dir: Path | None = None) -> tuple[dict[str, bytes], str]:
    """Find verified IDX payloads: explicit dir, $FASHION_MNIST_DIR, the Debian path, then upstream."""
    for folder in _candidate_dirs(source):
        if all((folder / name).is_file() for name in FILES):
            return {name: verify(folder / name) for name in FILES}, str(folder)
    if download_dir is not None:
        download_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in FILES:
                target = download_dir / name
                if not target.exists():
                    urllib.request.urlretrieve(UPSTREAM + name, target)  # noqa: S310 - fixed https host
        except OSError as exc:
            raise DataError(f"download from {UPSTREAM} failed ({exc}). {HOW_TO_GET}") from exc
        return {name: verify(download_dir / name) for name in FILES}, UPSTREAM
    raise DataError(HOW_TO_GET)


def parse_idx(payload: bytes, name: str) -> np.ndarray:
    """Decode an IDX1 (labels) or IDX3 (images) payload."""
    magic = struct.unpack(">I", payload[:4])[0]
    if magic == 2049:
        (n,) = struct.unpack(">I", payload[4:8])
        return np.frombuffer(payload, dtype=np.uint8, offset=8, count=n)
    if magic == 2051:
        n, rows, cols = struct.unpack(">III", payload[4:16])
        return np.frombuffer(payload, dtype=np.uint8, offset=16, count=n * rows * cols).reshape(n, rows, cols)
    raise DataError(f"{name}: not an IDX file (magic {magic})")


def _fingerprints(images: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """8x8 thumbnails and dHashes, exactly as validation computes them, for a stack of images."""
    from headstart.validation.decode import dhash, shrink

    gray = images.astype(np.float32) / 255.0
    thumbs = np.stack([shrink(g, 8, 8).ravel() for g in gray])
    return thumbs, [dhash(g) for g in gray]


def near_copies(
    train: np.ndarray, test: np.ndarray, max_rms: float, max_hamming: int
) -> tuple[set[int], set[int]]:
    """Fashion-MNIST has near-identical images across its official splits. Returns (train images that
    near-copy a test image, train images with a near-copy elsewhere in train): the first are left out,
    the second never go to val, so validation's leakage check passes on the imported dataset."""
    from headstart.validation.leakage import match_near_duplicates

    tr_thumbs, tr_hashes = _fingerprints(train)
    te_thumbs, te_hashes = _fingerprints(test)
    leaks = match_near_duplicates(te_thumbs, te_hashes, tr_thumbs, tr_hashes, max_rms, max_hamming)
    keys = [str(i) for i in range(len(train))]
    within = match_near_duplicates(tr_thumbs, tr_hashes, tr_thumbs, tr_hashes, max_rms, max_hamming, keys, keys)
    return {q for q, *_ in leaks}, {q for q, *_ in within} | {r for _, r, *_ in within}


def carve_val(labels: np.ndarray, per_class: int, seed: int, exclude: set[int] | None = None) -> np.ndarray:
    """Pick a stratified validation subset by a seeded hash order, independent of numpy's RNG."""
    chosen: list[int] = []
    for cls in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == cls)
        if exclude:
            idx = np.array([i for i in idx if i not in exclude], dtype=np.int64)
        if per_class > len(idx):
            raise DataError(f"data.val_per_class={per_class} exceeds the {len(idx)} images of class {cls}")
        order = sorted(idx.tolist(), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
        chosen.extend(order[:per_class])
    return np.array(sorted(chosen), dtype=np.int64)


_WRITING: tuple[np.ndarray, np.ndarray, Path, str] | None = None  # what a forked writer process encodes


def _write(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, folder: Path, prefix: str) -> None:
    """Encode the images as PNG files, in one process per CPU: 70,000 PNGs are ~25 s of one core.

    The writers are forked, so they share the arrays instead of receiving copies; the bytes written do not
    depend on which process encoded them."""
    global _WRITING
    workers = min(runtime.cpu_count(), 8)
    chunks = np.array_split(indices, max(1, len(indices) // 1000))
    _WRITING = (images, labels, folder, prefix)
    try:
        with tqdm(total=len(indices), desc=f"writing {folder.name}", unit="img",
                  disable=not progress_enabled()) as bar:
            if workers == 1:
                for chunk in chunks:
                    bar.update(_write_chunk(chunk))
                return
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for n in pool.imap_unordered(_write_chunk, chunks):
                    bar.update(n)
    finally:
        _WRITING = None


def _write_chunk(indices: np.ndarray) -> int:
    assert _WRITING is not None
    images, labels, folder, prefix = _WRITING
    for i in indices:
        target = folder / CLASSES[labels[i]] / f"{prefix}_{int(i):05d}.png"
        Image.fromarray(images[i], mode="L").save(target, format="PNG", compress_level=6)
    return len(indices)


def record_path(out_dir: Path) -> Path:
    """Where the import records what it wrote: outside the folder, so DVC hashes the images only
    (the import must reproduce the hash committed in data.dvc) and validation sees no stray file."""
    folder = out_dir.absolute()
    return folder.parent / ".headstart" / "import" / f"{folder.name}.json"


def contents(folder: Path) -> dict[str, object]:
    """A digest of every file's path and bytes, and the file count per folder: what was written, exactly."""
    digest = hashlib.sha256()
    per_folder: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = Path(root).relative_to(folder).as_posix()
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            data = (Path(root) / name).read_bytes()
            digest.update(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode())
            per_folder[rel_root] = per_folder.get(rel_root, 0) + 1
    return {"sha256": digest.hexdigest(), "folders": per_folder}


def _differences(written: dict[str, int], now: dict[str, int]) -> str:
    changes = [f"{name}/ is not from the import ({now[name]} files)" for name in sorted(now.keys() - written.keys())]
    changes += [f"{name}/ is gone" for name in sorted(written.keys() - now.keys())]
    changes += [f"{name}/ holds {now[name]} files, the import wrote {written[name]}"
                for name in sorted(now.keys() & written.keys()) if now[name] != written[name]]
    if not changes:
        return "files were edited since the import wrote them"
    return "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")


def _refuse(out_dir: Path, why: str) -> DataError:
    return DataError(
        f"{out_dir}: not replaced by the Fashion-MNIST import, it holds data the import did not write ({why}). "
        f"Nothing was deleted. To train on these images, run `dvc add {out_dir}` and commit {out_dir}.dvc; "
        f"to use Fashion-MNIST instead, move the folder away (`mv {out_dir} {out_dir}.mine`) and import again."
    )


def check_replaceable(out_dir: Path) -> None:
    """Raise unless `out_dir` is absent, empty, or exactly what an earlier import wrote there.

    The import replaces only its own output (a stale import is rebuilt); a user's images, or an
    import they added to or edited, are never deleted.
    """
    if out_dir.is_symlink():
        raise _refuse(out_dir, "it is a symbolic link")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise _refuse(out_dir, "it is a file, not a folder")
    if not any(out_dir.iterdir()):
        return
    record = record_path(out_dir)
    try:
        written = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(out_dir, f"no record of an import at {record}") from None
    except (OSError, ValueError) as exc:
        raise _refuse(out_dir, f"the import record {record} is unreadable: {exc}") from exc
    now = contents(out_dir)
    if now["sha256"] != written.get("sha256"):
        raise _refuse(out_dir, _differences(written.get("folders", {}), now["folders"]))


def _staging(out_dir: Path) -> Path:
    """A fresh staging folder next to out_dir; a leftover one is removed only if the import made it."""
    staging = out_dir.with_name(out_dir.name + ".importing")
    if staging.is_symlink() or staging.exists():
        if staging.is_symlink() or not (staging / STAGING_MARK).is_file():
            raise DataError(f"{staging}: exists and was not made by the import; move it away and import again")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARK).write_text("the Fashion-MNIST import writes here, then renames it\n")
    return staging


def importer_version() -> str:
    """What decides the bytes an import writes, besides its settings: this module's code and the versions of
    the PNG encoder (Pillow, zlib) and numpy. Two imports with the same value and settings write the same
    files, so a record with the current value stands for a re-import (tests/integration/test_dataset_dvc.py)."""
    import zlib

    import PIL

    stamp = f"{PIL.__version__}|{zlib.ZLIB_RUNTIME_VERSION}|{np.__version__}|".encode() + Path(__file__).read_bytes()
    return hashlib.sha256(stamp).hexdigest()[:16]


def read_record(out_dir: Path) -> dict[str, object] | None:
    """The record of the import that wrote `out_dir`, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(record_path(out_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_record(out_dir: Path, written: dict[str, object], origin: str, settings: dict[str, object]) -> None:
    record = record_path(out_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(record.name + ".tmp")
    payload = {**written, "source": origin, "importer": importer_version(), "settings": settings}
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, record)


def import_fashion_mnist(
    out_dir: Path, *, val_per_class: int = 500, seed: int = 42,
    source: Path | None = None, download_dir: Path | None = None,
    near_duplicate_max_rms: float = 0.01, near_duplicate_max_hamming: int = 12,
) -> ImportResult:
    """Write out_dir/{train,val,test}/<class>/*.png; replaces out_dir atomically, and only if an earlier
    import wrote it (see `check_replaceable`).

    The official test set is kept whole; train images that near-copy a test image are left out,
    and val is carved only from train images without a near-copy in train, so no split leaks.
    """
    check_replaceable(out_dir)  # before a minute of work, and again right before the replacement
    payloads, origin = locate(source, download_dir)
    train_x = parse_idx(payloads["train-images-idx3-ubyte.gz"], "train images")
    train_y = parse_idx(payloads["train-labels-idx1-ubyte.gz"], "train labels")
    test_x = parse_idx(payloads["t10k-images-idx3-ubyte.gz"], "test images")
    test_y = parse_idx(payloads["t10k-labels-idx1-ubyte.gz"], "test labels")
    leaking, twins = near_copies(train_x, test_x, near_duplicate_max_rms, near_duplicate_max_hamming)
    val_idx = carve_val(train_y, val_per_class, seed, exclude=leaking | twins)
    dropped = np.array(sorted(leaking), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(train_y)), np.concatenate([val_idx, dropped]))

    staging = _staging(out_dir)
    for split in ("train", "val", "test"):
        for name in CLASSES:
            (staging / split / name).mkdir(parents=True, exist_ok=True)
    _write(train_x, train_y, train_idx, staging / "train", "train")
    _write(train_x, train_y, val_idx, staging / "val", "train")
    _write(test_x, test_y, np.arange(len(test_y)), staging / "test", "t10k")
    (staging / STAGING_MARK).unlink()
    written = contents(staging)
    check_replaceable(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    _write_record(out_dir, written, origin, {
        "val_per_class": val_per_class, "seed": seed, "near_duplicate_max_rms": near_duplicate_max_rms,
        "near_duplicate_max_hamming": near_duplicate_max_hamming})
    counts = {"train": len(train_idx), "val": len(val_idx), "test": len(test_y), "left_out": len(dropped)}
    return ImportResult(out_dir=out_dir, source=origin, counts=counts)
