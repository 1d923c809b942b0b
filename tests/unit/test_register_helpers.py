"""The register step's pure helpers: which test images the serving check uses, and what it pins."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.steps.register import public_version, serving_sample

SORTED_BY_CLASS = np.repeat(np.arange(10), 50)  # how evaluate lists the test split: class folder by folder


def test_serving_sample_covers_every_class_when_n_allows() -> None:
    picked = serving_sample(SORTED_BY_CLASS, 32)
    assert len(picked) == len(set(picked)) == 32
    counts = np.bincount(SORTED_BY_CLASS[picked], minlength=10)
    assert counts.min() >= 3 and counts.max() <= 4  # round-robin: as even as 32 over 10 can be
    assert serving_sample(SORTED_BY_CLASS, 10) == [50 * k for k in range(10)]  # each class's first image


def test_serving_sample_is_deterministic_and_keeps_each_class_in_order() -> None:
    labels = np.random.default_rng(0).integers(0, 4, size=200)
    a, b = serving_sample(labels, 17), serving_sample(labels.copy(), 17)
    assert a == b
    for k in range(4):
        mine = [i for i in a if labels[i] == k]
        assert mine == sorted(mine) and mine == list(np.flatnonzero(labels == k)[: len(mine)])


def test_serving_sample_with_fewer_images_than_classes_or_than_asked() -> None:
    picked = serving_sample(SORTED_BY_CLASS, 3)
    assert len(set(SORTED_BY_CLASS[picked])) == 3  # n < classes: n distinct classes, one image each
    small = np.array([0, 0, 1, 2, 2, 2])
    assert serving_sample(small, 100) == [0, 2, 3, 1, 4, 5]  # everything, round-robin
    assert serving_sample(np.array([], dtype=int), 5) == []


@pytest.mark.parametrize(("installed", "pinned"), [
    ("2.14.1+cpu", "2.14.1"), ("2.14.1+cu124", "2.14.1"), ("0.29.0+rocm6.2", "0.29.0"),
    ("2.14.1", "2.14.1"), ("1.26.4", "1.26.4"), ("3.0.0rc1", "3.0.0rc1"), ("2.0.post1", "2.0.post1"),
])
def test_public_version_strips_local_labels_only(installed: str, pinned: str) -> None:
    assert public_version(installed) == pinned
