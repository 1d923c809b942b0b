"""The prediction store: a model's predicted labels on a test split, computed once and kept.

Scoring the champion again on every run costs a full pass over the test split for an answer that has
not changed. An entry is keyed by everything the answer depends on:

- the model's content: the bytes `modelio.save` wrote (weights and card: architecture, classes, preset);
- the test split's fingerprint: every image's bytes, relative path and label for an ImageFolder, the
  index's shard sha256s (and counts) for a sharded dataset, plus the class list;
- the TTA mode;
- the device kind and precision that made them ("cpu/fp32", or "cuda/bf16": the engine's autocast), so
  a check that must compare like with like (the serving check) finds the entry made its way.

The store is a local folder or an `s3://bucket/prefix` URI (headstart.storage). One entry is one
`<key digest>.npz` file holding the labels (int32, one per image), each label's confidence (the top softmax
probability, float32: the report's calibration section) and the key it was written for; it is
written atomically (a temporary file renamed locally; an S3 object appears only once uploaded), and an
entry that is unreadable, truncated or holds another key or shape is ignored and recomputed. The store
is a cache: a failure to read or write it is logged and the run goes on.

The key also holds what turns the same bytes into other labels: the versions of Pillow (decoding), numpy,
torch and torchvision, and a digest of Headstart's own prediction path (presets, engine, modelio, models), so an
upgraded decoder or kernel is a miss, never an older answer.

Integrity: a shared `s3://` store can be written by whoever holds write access to that bucket (the DVC remote's
readers, MLflow's artifact writers, other pipelines), and a planted entry for the champion would decide
promotions. So each entry carries an HMAC-SHA256 of its key and labels, under a key derived from
`MLFLOW_TRACKING_PASSWORD`, the secret of the pipeline's MLflow user (the `headstart-mlflow` Secret every task
mounts). That user alone may move the "champion" alias, so forging an entry needs exactly the secret that could
move the alias directly: the store adds no way in. (The S3 credentials would not do: they are shared more widely,
and the writer of a shared bucket is the very party the check is against. Digests kept in MLflow would need a
registry round trip per entry, and the champion's entry must verify before registration has happened.)
An entry whose HMAC does not verify is ignored with a warning, scored again and overwritten, never used.
Without that secret (a local `make run` on SQLite): a local folder is on the user's own disk, as trusted as the
SQLite registry next to it, and its entries carry an unkeyed HMAC (a checksum); an `s3://` store is not used at
all, with a warning, since nothing could tell a planted entry from ours.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headstart import storage
from headstart.errors import StorageError

FORMAT = 3  # 2: the library versions and the HMAC; 3: confidences beside the labels
SECRET_VAR = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - the variable's name, not its value
CPU_FP32 = "cpu/fp32"
CUDA_BF16 = "cuda/bf16"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionKey:
    """What a model's predictions on a split depend on."""

    model: str  # model_digest(model_dir)
    data: str  # the split's content: open_dataset(root).fingerprint(split, classes)
    tta: str
    device: str  # CPU_FP32 or CUDA_BF16

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def stamp(self) -> str:
        """The key as stored in an entry: its fields plus this process's libraries (`library_versions`)."""
        return json.dumps({**self.to_dict(), "libs": library_versions()}, sort_keys=True)

    def digest(self) -> str:
        return hashlib.blake2b(f"{FORMAT}|{self.stamp()}".encode(), digest_size=20).hexdigest()


def library_versions() -> str:
    """What turns the same model and images into other labels: Pillow (decoding), numpy, torch, torchvision,
    and Headstart's own prediction path (a digest of its source)."""
    import PIL
    import torch
    import torchvision

    return f"pil={PIL.__version__}|numpy={np.__version__}|torch={torch.__version__}|" \
           f"torchvision={torchvision.__version__}|headstart={_code_digest()}"


@functools.cache
def _code_digest() -> str:
    """The source of the modules a prediction runs through: preprocessing, the engine, model loading, models."""
    root = Path(__file__).parents[1]
    models = root / "models"  # modelio.py is listed by itself, as before it moved into models/
    digest = hashlib.blake2b(digest_size=8)
    for path in [root / "presets.py", root / "training" / "engine.py", models / "modelio.py",
                 *sorted(p for p in models.glob("*.py") if p.name != "modelio.py")]:
        digest.update(path.name.encode() + b"|" + path.read_bytes())
    return digest.hexdigest()


def _mac_key(store: str) -> bytes | None:
    """The HMAC key for `store`'s entries (see the module docstring); None, with a warning: an s3:// store with no
    secret, not used."""
    secret = os.environ.get(SECRET_VAR)
    if secret:
        return hmac.new(secret.encode(), b"headstart prediction store", hashlib.sha256).digest()
    if not storage.is_s3(store):
        return b""
    log.warning("prediction store %s: %s is not set, so its entries cannot be told from planted ones; not used "
                "(set %s as the pipeline's MLflow secret does, or use a local folder)", store, SECRET_VAR, SECRET_VAR)
    return None


def _mac(mac_key: bytes, stamp: str, labels: np.ndarray, confidence: np.ndarray) -> str:
    body = (stamp.encode() + b"|" + np.ascontiguousarray(labels, dtype="<i4").tobytes() + b"|"
            + np.ascontiguousarray(confidence, dtype="<f4").tobytes())
    return hmac.new(mac_key, body, hashlib.sha256).hexdigest()


def device_kind(device_type: str) -> str:
    """The device kind and precision predictions are made in: engine.predict_logits autocasts to bf16 on
    CUDA and runs fp32 on the CPU."""
    return CUDA_BF16 if device_type == "cuda" else CPU_FP32


def model_digest(model_dir: Path) -> str:
    """Hash of the saved model's files (weights, then card), read in chunks."""
    from headstart.models.modelio import CARD_FILE, WEIGHTS_FILE

    digest = hashlib.blake2b(digest_size=20)
    for name in (WEIGHTS_FILE, CARD_FILE):
        digest.update(f"|{name}|".encode())
        with open(Path(model_dir) / name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def entry_uri(store: str, key: PredictionKey) -> str:
    return storage.join(store, f"{key.digest()}.npz")


def load(store: str, key: PredictionKey, n: int, n_classes: int) -> np.ndarray | None:
    """The stored labels for `key` (int64, shape (n,)), or None when absent or unusable."""
    entry = load_scored(store, key, n, n_classes)
    return None if entry is None else entry[0]


def load_scored(store: str, key: PredictionKey, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored labels (int64) and confidences (float32) for `key`, or None when absent or unusable."""
    if (mac_key := _mac_key(store)) is None:
        return None
    uri, stamp = entry_uri(store, key), key.stamp()
    try:
        if not storage.exists(uri):
            return None
        raw, _ = storage.read_bytes(uri)
        with np.load(io.BytesIO(raw), allow_pickle=False) as entry:
            stored_key, labels, mac = str(entry["key"]), entry["labels"], str(entry["mac"]) if "mac" in entry else ""
            conf = entry["confidence"]
    except (StorageError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("prediction store: %s is unreadable (%s); scoring again", uri, exc)
        return None
    if stored_key != stamp:
        log.warning("prediction store: %s holds another key; scoring again", uri)
        return None
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or (n and not 0 <= labels.min() <= labels.max()
                                                                  < n_classes):
        log.warning("prediction store: %s holds %s labels of shape %s, expected (%d,) in [0, %d); scoring again",
                    uri, labels.dtype, labels.shape, n, n_classes)
        return None
    if conf.shape != (n,) or conf.dtype != np.float32:
        log.warning("prediction store: %s holds confidences %s %s, expected float32 (%d,); scoring again",
                    uri, conf.dtype, conf.shape, n)
        return None
    if not hmac.compare_digest(mac, _mac(mac_key, stamp, labels, conf)):
        log.warning("prediction store: %s fails its integrity check (HMAC under %s): written without this "
                    "pipeline's secret, or altered since; NOT used, scoring again", uri, SECRET_VAR)
        return None
    return labels.astype(np.int64), conf


def save(store: str, key: PredictionKey, labels: np.ndarray, confidence: np.ndarray) -> str | None:
    """Keep `labels` and their `confidence` under `key`; the entry's URI, or None when the store could not be
    written."""
    if (mac_key := _mac_key(store)) is None:
        return None
    uri, stamp, labels = entry_uri(store, key), key.stamp(), np.asarray(labels, dtype=np.int32)
    confidence = np.asarray(confidence, dtype=np.float32)
    tmp_name = None
    try:
        folder = None if storage.is_s3(store) else Path(store)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz.tmp", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, labels=labels, confidence=confidence, key=np.array(stamp),
                     mac=np.array(_mac(mac_key, stamp, labels, confidence)))
        if folder is None:
            storage.upload(Path(tmp_name), uri)
        else:
            os.replace(tmp_name, uri)
            tmp_name = None
    except (StorageError, OSError) as exc:
        log.warning("prediction store: could not write %s (%s); predictions are not kept", uri, exc)
        return None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return uri
