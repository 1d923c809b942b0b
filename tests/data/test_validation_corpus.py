"""Data tests: validation catches every kind of bad input in the corpus, and passes the valid set."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.steps.validate import format_failures, run
from tests.data.corpus import EXPECTED, KINDS, corpus_config, make_valid, make_variant


def test_valid_dataset_has_no_failure_and_no_warning(tmp_path: Path) -> None:
    data = make_valid(tmp_path)
    result = run(corpus_config(tmp_path), data, tmp_path / "out")
    assert result.passed, format_failures(result)
    assert not result.failed and not result.warned, format_failures(result)
    assert result.n_images == 3 * 22
    assert (corpus_config(tmp_path).state_dir / "accepted_summary.json").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_variant_is_caught_naming_defect_and_file(kind: str, tmp_path: Path) -> None:
    expected = EXPECTED[kind]
    data = make_variant(kind, tmp_path)
    result = run(corpus_config(tmp_path), data, tmp_path / "out")

    check = result.check(expected.check)
    assert check.status == expected.status, format_failures(result)
    assert result.passed is (expected.status == "warn")
    offenders = {f["file"]: f["reason"] for f in check.files}
    assert expected.file in offenders, f"{expected.file} not among {sorted(offenders)}"
    for word in expected.words:
        assert word.lower() in offenders[expected.file].lower(), offenders[expected.file]
    assert expected.file in check.message
    table = format_failures(result)
    assert expected.check in table and expected.status in table
    # a rejected version never becomes the reference for drift
    if expected.status == "fail" and kind != "label_drift":
        assert not (corpus_config(tmp_path).state_dir / "accepted_summary.json").exists()


def test_only_the_defect_is_reported(tmp_path: Path) -> None:
    """A single duplicated file trips exactly one check: findings do not spill into unrelated checks."""
    data = make_variant("duplicate_across_splits", tmp_path)
    result = run(corpus_config(tmp_path), data, tmp_path / "out")
    assert [c.name for c in result.checks if c.status in ("fail", "warn")] == ["duplicates_across_splits"]


def test_drift_severity_warn_lets_the_run_pass(tmp_path: Path) -> None:
    data = make_variant("label_drift", tmp_path)
    cfg = corpus_config(tmp_path, severity={"label_drift": "warn", "pixel_drift": "warn"})
    result = run(cfg, data, tmp_path / "out")
    assert result.passed and result.check("label_drift").status == "warn"
