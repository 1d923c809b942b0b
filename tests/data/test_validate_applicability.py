"""Validation says what it could not check and why: fewer than 2 classes fail, a check with nothing to look
at (shards of an ImageFolder, drift on a first run) shows n/a rather than "ok", and a split whose class
folders differ from the label set gets one line saying so before the per-folder list."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.steps import validate
from headstart.validation.config import ValidateConfig
from tests.conftest import CLASSES, make_imagefolder
from tests.helpers import params_cfg

PER_CLASS = {"train": 4, "val": 2, "test": 2}


def _cfg(root: Path, **overrides) -> ValidateConfig:
    values = {"label_set": None, "cache_dir": None, "state_dir": root / "state", "workers": 1,
              "min_images_per_class": 1}
    return params_cfg("validate", **(values | overrides))


def _check(out: Path, name: str) -> dict:
    return next(c for c in json.loads((out / "report.json").read_text())["checks"] if c["name"] == name)


def test_a_single_class_dataset_fails_validation(tmp_path):
    """(`headstart data pack` already refuses one class, so a packed one cannot be made.)"""
    data = make_imagefolder(tmp_path / "one", per_class=dict(PER_CLASS), classes=("shirt",))
    result = validate.run(_cfg(tmp_path), data, tmp_path / "out")
    assert not result.passed
    assert result.check("labels").status == "fail"
    assert "1 class (label set from observed folders): a classifier needs at least 2" in (
        result.check("labels").message)


def test_checks_that_do_not_apply_show_na_until_they_do(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=dict(PER_CLASS))
    first = validate.run(_cfg(tmp_path), data, tmp_path / "first")
    assert first.passed
    for name in ("shards", "label_drift", "pixel_drift"):
        assert _check(tmp_path / "first", name)["status"] == "n/a", name
    assert _check(tmp_path / "first", "shards")["message"] == "n/a: an ImageFolder has no shards"
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["checks"]["label_drift"] == "n/a" and summary["passed"]
    html = (tmp_path / "first" / "report.html").read_text()
    assert "n/a</span></td><td>drift</td><td><b>label_drift</b></td><td>n/a: no earlier accepted version" in html

    second = validate.run(_cfg(tmp_path), data, tmp_path / "second")  # the first one was accepted: drift applies
    assert second.check("label_drift").status == "pass" and second.check("shards").status == "n/a"


def test_a_split_whose_folders_differ_from_the_label_set_is_diagnosed_in_one_line(tmp_path):
    labels = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
    data = make_imagefolder(tmp_path / "data", per_class=dict(PER_CLASS), classes=CLASSES[:1])
    result = validate.run(_cfg(tmp_path, label_set=labels), data, tmp_path / "out")
    labels_check = result.check("labels")
    assert labels_check.status == "fail"
    assert labels_check.files[0] == {"file": "test/",
                                     "reason": "found 1 class; params expect 10; set `validate.label_set`"}
    assert labels_check.message.split(" problems: ", 1)[1].startswith("test/: found 1 class; params expect 10")
