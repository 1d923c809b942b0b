"""Per-file facts: hashes, thumbnails, decode verdicts, bomb refusal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from headstart.validation.decode import classify, dhash, gray_array, hamming, inspect_bytes, shrink
from headstart.validation.scan import scan_files
from tests.data.corpus import _png_declaring

LIMIT = 16_777_216


def _png(arr: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


@pytest.fixture
def picture() -> np.ndarray:
    yy, xx = np.mgrid[0:28, 0:28]
    return np.clip(40 + 180 * ((yy - 14) ** 2 + (xx - 10) ** 2 < 60) + xx * 2, 0, 255).astype(np.uint8)


def test_dhash_is_64_bits_and_stable_under_resize(picture: np.ndarray) -> None:
    h = dhash(picture / 255.0)
    assert 0 <= h < 2**64
    assert dhash(picture / 255.0) == h
    big = np.asarray(Image.fromarray(picture).resize((56, 56), Image.Resampling.NEAREST)) / 255.0
    assert hamming(dhash(big), h) == 0
    assert hamming(dhash(picture.T / 255.0), h) > 12


def test_hamming_counts_differing_bits() -> None:
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def test_area_thumbnail_does_not_depend_on_resolution(picture: np.ndarray) -> None:
    small = shrink(picture / 255.0, 8, 8)
    big = shrink(np.kron(picture, np.ones((3, 3))) / 255.0, 8, 8)
    assert np.allclose(small, big, atol=1e-5)
    assert shrink(np.ones((13, 7)), 8, 8).shape == (8, 8)


def test_gray_array_scales_16_bit_to_unit_range() -> None:
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert img.mode.startswith("I")
    assert gray_array(img).max() == pytest.approx(1.0)


def test_inspect_valid_png_reports_size_mode_hash_and_stats(picture: np.ndarray) -> None:
    facts = inspect_bytes(_png(picture), LIMIT)
    assert facts["error"] is None
    assert (facts["width"], facts["height"], facts["mode"], facts["format"]) == (28, 28, "L", "PNG")
    assert len(facts["thumb"]) == 128 and len(facts["dhash"]) == 16
    assert facts["stats"]["channels"] == "L"
    assert facts["stats"]["mean"][0] == pytest.approx(picture.mean() / 255, abs=1e-6)


def test_reencoded_png_has_other_bytes_but_same_thumbnail(picture: np.ndarray) -> None:
    a, b = _png(picture, compress_level=1), _png(picture, compress_level=9, optimize=True)
    assert a != b
    assert inspect_bytes(a, LIMIT)["thumb"] == inspect_bytes(b, LIMIT)["thumb"]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"plain text, not an image", "not_image"),
        (_png_declaring(100_000, 100_000), "bomb"),  # > 2x limit: DecompressionBombError at open
        (_png_declaring(5_000, 4_000), "bomb"),  # between limit and 2x: the warning, made an error
    ],
    ids=["zero-byte", "text", "bomb-error", "bomb-warning"],
)
def test_bad_bytes_get_a_named_verdict(data: bytes, kind: str) -> None:
    facts = inspect_bytes(data, LIMIT)
    assert facts["error_kind"] == kind
    assert facts["error"]


def test_bomb_is_refused_without_allocating(tmp_path) -> None:
    """A 10-gigapixel declaration in a 70-byte file: refused at open, nothing decoded."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))
    facts = scan_files([str(path)], LIMIT, 1, None)[0][0]
    assert facts["bytes"] < 200 and facts["error_kind"] == "bomb"
    assert "decompression bomb" in facts["error"] and str(LIMIT) in facts["error"]


def test_truncated_png_is_named_truncated(picture: np.ndarray) -> None:
    data = _png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    facts = inspect_bytes(data[: len(data) // 2], LIMIT)
    assert facts["error_kind"] == "truncated", facts["error"]


def test_classify_falls_back_to_corrupt() -> None:
    assert classify(SyntaxError("broken PNG file"), LIMIT)[0] == "corrupt"
