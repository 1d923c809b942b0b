"""Layout walk: hostile names, links and stray files become findings and are never read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.errors import DataError
from headstart.validation.layout import scan_layout, shown, unsafe_reason
from tests.conftest import make_imagefolder
from tests.helpers import params_cfg

CFG = params_cfg("validate", label_set=None, min_images_per_class=1)


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


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.parametrize(("cache_type", "cache_dir"), [("symlink", None), ("hardlink", None), ("symlink", "../store")])
def test_a_dvc_checkout_linked_to_its_cache_is_accepted(tmp_path: Path, cache_type: str, cache_dir: str | None):
    """`dvc add` with cache.type symlink or hardlink leaves every image a link into the repository's cache
    (.dvc/cache, or cache.dir); validation reads them, and still refuses any other link out of the folder."""
    repo = tmp_path / "repo"
    data = make_imagefolder(repo / "data", per_class={"train": 2, "val": 1, "test": 1})
    _dvc(repo, "init", "--no-scm", "-q")
    _dvc(repo, "config", "cache.type", cache_type)
    if cache_dir:
        _dvc(repo, "cache", "dir", cache_dir)  # stored relative to .dvc/, as DVC reads it
    _dvc(repo, "add", "-q", "data")
    image = data / "train/circle/train_0000.png"
    assert image.is_symlink() == (cache_type == "symlink")
    if cache_dir:
        assert image.resolve().is_relative_to(tmp_path / "store")
    (repo / "elsewhere.png").write_bytes((data / "test/circle/test_0000.png").read_bytes())
    os.symlink(repo / "elsewhere.png", data / "test/circle/out_of_the_cache.png")

    layout = scan_layout(data, CFG.splits, CFG.extensions)

    links = {(f.file, f.reason) for f in layout.findings if f.check == "symlinks"}
    assert links == {("test/circle/out_of_the_cache.png", "symlink points outside the data folder")}
    assert len(layout.entries) == 3 * 4


def test_a_link_into_another_repositorys_dvc_cache_is_refused(tmp_path: Path):
    other = tmp_path / "other"
    (other / ".dvc/cache").mkdir(parents=True)
    (other / ".dvc/cache/ab").write_bytes(b"x")
    data = make_imagefolder(tmp_path / "repo/data", per_class={"train": 1, "val": 1, "test": 1})
    (tmp_path / "repo/.dvc/cache").mkdir(parents=True)
    os.symlink(other / ".dvc/cache/ab", data / "train/circle/foreign.png")
    layout = scan_layout(data, CFG.splits, CFG.extensions)
    assert ("symlinks", "train/circle/foreign.png") in {(f.check, f.file) for f in layout.findings}
