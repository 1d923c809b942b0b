"""The confusion-matrix picture stays bounded at 1,000 classes and keeps the full matrix as data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from headstart.evaluation import plots

MAX_SIDE = 2000  # px


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 3, (n, n))
    np.fill_diagonal(m, 50)
    m[7, 3] = 40  # the most confused pair
    return m


def test_the_plot_of_a_thousand_classes_is_bounded_and_names_the_most_confused_pairs(tmp_path: Path):
    n = 1000
    classes = [f"class_{i:04d}" for i in range(n)]
    matrix = _matrix(n)
    png = plots.confusion_matrix_png(matrix, classes, tmp_path / "c.png", "many")
    with Image.open(png) as img:
        assert max(img.size) <= MAX_SIDE, img.size  # the old figure: (1 + 0.6 n) in at 100 dpi = 60,100 px
    saved = np.load(tmp_path / "c.npz")
    assert np.array_equal(saved["matrix"], matrix) and list(saved["classes"]) == classes
    top = plots.most_confused(matrix, classes, k=5)
    assert top[0][:3] == ("class_0007", "class_0003", 40) and len(top) == 5
    assert all(t[2] >= u[2] for t, u in zip(top, top[1:], strict=False))


def test_the_scaled_size_a_few_hundred_classes_would_have_reached(tmp_path: Path):
    n = 200  # the old code drew a 12,100 px figure with 40,000 cell labels here
    png = plots.confusion_matrix_png(_matrix(n), [str(i) for i in range(n)], tmp_path / "c.png", "t")
    with Image.open(png) as img:
        assert max(img.size) <= MAX_SIDE, img.size


def test_a_few_classes_keep_the_labelled_matrix(tmp_path: Path):
    classes = ["cat", "dog", "bird"]
    png = plots.confusion_matrix_png(np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]]), classes, tmp_path / "c.png", "t")
    with Image.open(png) as img:
        small = img.size
    assert max(small) < 400 and (tmp_path / "c.npz").is_file()
    assert plots.most_confused(np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]]), classes, k=2) == [
        ("bird", "cat", 2, 2 / 6), ("cat", "dog", 1, 1 / 6)]
