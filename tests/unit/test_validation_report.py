"""The validate step's outputs: self-contained HTML, reproducible JSON, Data Docs, state, CLI table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from headstart.errors import DataError
from headstart.steps.validate import format_failures, run
from headstart.validation.result import ValidationResult
from tests.conftest import CLASSES
from tests.data.corpus import corpus_config


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationResult]:
    from tests.conftest import make_imagefolder

    root = tmp_path_factory.mktemp("report")
    data = make_imagefolder(root / "data")
    return root, run(corpus_config(root), data, root / "out")


def test_html_report_is_self_contained(validated: tuple[Path, ValidationResult]) -> None:
    root, result = validated
    page = Path(result.reports["report_html"]).read_text(encoding="utf-8")
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|<script|<link|@import|url\(", page, re.I)
    assert re.findall(r"src='([^']+)'", page) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']+)'", page)
    )
    assert page.count("<img") == 1 + len(CLASSES) * 4  # the chart and four thumbnails per class
    assert "PASSED" in page and "near_duplicates_across_splits" in page


def test_reports_are_reproducible_and_hold_no_absolute_path(
    validated: tuple[Path, ValidationResult], tmp_path: Path
) -> None:
    root, first = validated
    again = run(corpus_config(root, state_dir=None), root / "data", tmp_path / "again")
    for name in ("report.json", "summary.json", "report.html", "manifest.csv"):
        a, b = (root / "out" / name).read_bytes(), (tmp_path / "again" / name).read_bytes()
        assert a == b, name
        assert str(root).encode() not in a and str(tmp_path).encode() not in a
    assert again.scan["cache_hits"] == again.n_images  # the second run decoded nothing


def test_report_json_shape(validated: tuple[Path, ValidationResult]) -> None:
    root, result = validated
    report = json.loads((root / "out/report.json").read_text())
    assert report["passed"] is True and report["n_images"] == 66
    assert report["counts"]["train"] == {c: 12 for c in CLASSES}
    assert {c["name"] for c in report["checks"]} >= {"decode", "near_duplicates_across_splits", "label_drift"}
    assert all(set(c) >= {"status", "message", "numbers", "files", "n_files"} for c in report["checks"])
    assert {e["check"] for e in report["expectations"]} >= {"decode", "dimensions", "mode", "labels"}
    summary = json.loads((root / "out/summary.json").read_text())
    assert summary["label_set"] == sorted(CLASSES) and summary["passed"] is True


def test_data_docs_and_accepted_state_are_written(validated: tuple[Path, ValidationResult]) -> None:
    root, result = validated
    assert result.reports["data_docs"].endswith("index.html") and Path(result.reports["data_docs"]).is_file()
    state = json.loads((root / "state/accepted_summary.json").read_text())
    assert state["fingerprint"] == result.fingerprint


def test_format_failures_is_one_line_when_all_pass(validated: tuple[Path, ValidationResult]) -> None:
    _, result = validated
    assert format_failures(result).splitlines()[0].startswith("validation PASSED: 0 failed, 0 warned")
    assert len(format_failures(result).splitlines()) == 1


def test_missing_data_dir_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        run(corpus_config(tmp_path), tmp_path / "nope", tmp_path / "out")


def test_manifest_csv_names_each_files_sha256_and_dhash_whatever_its_chunking(
    validated: tuple[Path, ValidationResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest keeps digests as raw bytes; manifest.csv shows them as hex, written a chunk at a time."""
    import hashlib

    import pandas as pd

    from headstart.validation import manifest as manifest_module
    from headstart.validation.decode import inspect_bytes

    root, _ = validated
    table = pd.read_csv(root / "out/manifest.csv", dtype=str)
    for rel, sha, dhash in table[["path", "sha256", "dhash"]].head(12).itertuples(index=False):
        data = (root / "data" / rel).read_bytes()
        assert sha == hashlib.sha256(data).hexdigest() and dhash == inspect_bytes(data, 1 << 24)["dhash"]
    monkeypatch.setattr(manifest_module, "CSV_ROWS", 7)  # 66 rows: ten chunks, one header
    run(corpus_config(root, state_dir=None), root / "data", tmp_path / "chunked")
    assert (tmp_path / "chunked/manifest.csv").read_bytes() == (root / "out/manifest.csv").read_bytes()
