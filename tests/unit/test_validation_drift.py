"""Drift against the last accepted version, and the label set it supplies."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from headstart.steps.validate import run
from headstart.validation.drift import drift_checks, psi
from tests.data.corpus import accept, corpus_config, make_valid
from tests.helpers import params_cfg


def test_psi_is_zero_for_equal_mixes_and_grows_with_shift() -> None:
    assert psi({"a": 10, "b": 10}, {"a": 50, "b": 50}) == pytest.approx(0.0)
    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert psi({"a": 2, "b": 8}, {"a": 5, "b": 5}) == pytest.approx(expected)
    assert psi({"a": 5, "b": 5, "c": 1}, {"a": 5, "b": 5}) > 0.05  # a new class counts


def test_no_previous_version_means_nothing_to_compare() -> None:
    findings, numbers = drift_checks(params_cfg("validate",
                                                label_set=None, min_images_per_class=1), {"splits": {}}, None)
    assert findings == [] and numbers["label_drift"]["previous"] is None


def test_pixel_drift_names_split_and_channel() -> None:
    split = {"class_counts": {"a": 5}, "pixel_stats": {"L": {"mean": 0.5, "std": 0.2}}}
    before = {"splits": {"train": split}, "fingerprint": "x"}
    now = {"splits": {"train": split | {"pixel_stats": {"L": {"mean": 0.6, "std": 0.2}}}}}
    findings, _ = drift_checks(params_cfg("validate", label_set=None, min_images_per_class=1), now, before)
    assert [(f.check, f.file) for f in findings] == [("pixel_drift", "train/")]
    assert "channel L intensity mean" in findings[0].reason


def test_label_set_falls_back_to_the_previous_accepted_version(tmp_path: Path) -> None:
    data = make_valid(tmp_path)
    accept(data, tmp_path / "state")
    (data / "train/circle").rename(data / "train/oval")  # unknown now, missing too
    result = run(corpus_config(tmp_path, label_set=None), data, tmp_path / "out")
    assert result.label_source == "previous accepted version"
    assert result.check("labels").status == "fail"
    assert "train/oval/" in {f["file"] for f in result.check("labels").files}
    assert result.check("class_counts").status == "fail"
