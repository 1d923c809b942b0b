"""Per-file facts: content hash, decode verdict, size, mode, perceptual hash, thumbnail, pixel sums.

This is the expensive part of validation and runs in worker processes; everything it returns
depends only on the file's bytes and the pixel limit, which is what makes it cacheable by hash.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

THUMB = 8  # thumbnail side and dHash rows: 64 cells, 64 bits
FACTS = ("width", "height", "mode", "format", "error_kind", "error", "dhash", "thumb")  # and "stats"
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;L"}


@functools.lru_cache(maxsize=256)
def _area(n: int, out: int) -> np.ndarray:
    """Exact area-averaging weights n -> out, so a thumbnail does not depend on the image's resolution."""
    edges = np.arange(out + 1) * n / out
    cols = np.arange(n)
    weights = np.clip(np.minimum(edges[1:, None], cols + 1) - np.maximum(edges[:-1, None], cols), 0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def shrink(gray: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return _area(gray.shape[0], rows) @ gray @ _area(gray.shape[1], cols).T


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash: is each cell of an 8x9 area average brighter than its left neighbour."""
    cells = shrink(gray, THUMB, THUMB + 1)
    bits = (cells[:, 1:] > cells[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def gray_array(img: Image.Image) -> np.ndarray:
    """Intensity in [0, 1], whatever the mode (16-bit and float included)."""
    if img.mode.startswith("I"):
        scale = 65535.0 if img.mode.startswith("I;16") else float(max(1, np.asarray(img).max()))
        return np.clip(np.asarray(img, dtype=np.float32) / scale, 0, 1)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def _channel_stats(img: Image.Image) -> dict[str, Any]:
    """Per-channel mean and mean of squares, so splits can be pooled exactly later."""
    if img.mode in _GRAY_MODES:
        arr, channels = gray_array(img)[..., None], "L"
    else:
        arr, channels = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, "RGB"
    flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
    return {
        "channels": channels,
        "mean": [round(float(v), 8) for v in flat.mean(axis=0)],
        "msq": [round(float(v), 8) for v in (flat * flat).mean(axis=0)],
        "pixels": int(flat.shape[0]),
    }


def _reduced(img: Image.Image, side: int = 512) -> Image.Image:
    """Block-average big images first: thumbnails and statistics do not need every pixel."""
    if max(img.size) <= side:
        return img
    try:
        return img.reduce(max(img.size) // side)
    except (ValueError, OSError):  # modes PIL cannot reduce (16-bit) are used as they are
        return img


def classify(exc: BaseException, max_pixels: int) -> tuple[str, str]:
    """(kind, reason) for a decode failure, worded for the person fixing the file."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "bomb", f"decompression bomb refused (over max_pixels={max_pixels}): {text}"
    if isinstance(exc, UnidentifiedImageError):
        return "not_image", "not an image (format not recognised)"
    if "truncat" in text.lower():
        return "truncated", f"truncated image: {text}"
    return "corrupt", f"corrupt image: {text}"


def inspect_bytes(data: bytes, max_pixels: int) -> dict[str, Any]:
    """Decode facts for one file's bytes; over max_pixels is refused before any pixel is decoded."""
    facts: dict[str, Any] = dict.fromkeys((*FACTS, "stats"))
    if not data:
        facts.update(error_kind="empty", error="zero-byte file")
        return facts
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels  # PIL checks it at open()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                facts.update(width=img.width, height=img.height, mode=img.mode, format=img.format)
                img.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                img = _reduced(img)
                gray = gray_array(img)
                facts.update(
                    dhash=f"{dhash(gray):016x}",
                    thumb=np.round(shrink(gray, THUMB, THUMB) * 255).astype(np.uint8).tobytes().hex(),
                    stats=_channel_stats(img),
                )
    except Exception as exc:  # noqa: BLE001 - any decoder error is a verdict on the file, not a crash
        kind, reason = classify(exc, max_pixels)
        facts.update(error_kind=kind, error=reason)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return facts


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
