"""Layout walk: hostile names, links and stray files become findings and are never read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headstart.errors import DataError
from headstart.validation.config import ValidateConfig
from headstart.validation.layout import scan_layout, shown, unsafe_reason

CFG = ValidateConfig()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("img.png", None),
        ("..evil.png", "'..'"),
        ("a..b.png", "'..'"),
        ("bell\x07.png", "control"),
        ("back\\slash.png", "backslash"),
        (" lead.png", "whitespace"),
        ("bad\udcff.png", "UTF-8"),
        ("zero\u200bwidth.png", "non-printable"),
        ("café.png", None),
    ],
)
def test_unsafe_names(name: str, reason: str | None) -> None:
    got = unsafe_reason(name)
    assert (got is None) if reason is None else (reason in got)


def test_shown_escapes_control_characters() -> None:
    assert shown("a\x07b\nc") == "a\\x07b\\nc"


def test_missing_or_non_folder_data_dir_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        scan_layout(tmp_path / "nope", CFG.splits, CFG.extensions)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="expected a folder"):
        scan_layout(tmp_path / "file", CFG.splits, CFG.extensions)


def test_stray_entries_and_links(tiny_imagefolder: Path, tmp_path: Path) -> None:
    d = tiny_imagefolder
    (d / "README.md").write_text("x")
    (d / "train/loose.png").write_bytes(b"x")
    (d / "train/circle/sub").mkdir()
    os.symlink(d / "train/circle/train_0000.png", d / "val/circle/inside_link.png")
    os.symlink(tmp_path / "missing.png", d / "val/circle/dangling.png")
    layout = scan_layout(d, CFG.splits, CFG.extensions)
    found = {(f.check, f.file) for f in layout.findings}
    assert ("stray_files", "README.md") in found
    assert ("stray_files", "train/loose.png") in found
    assert ("stray_files", "train/circle/sub/") in found
    assert ("symlinks", "val/circle/dangling.png") in found
    assert "val/circle/inside_link.png" in {e.rel for e in layout.entries}  # a link inside is fine
    assert len(layout.entries) == 66 + 1
