"""One list of image suffixes, so validation accepts exactly what training reads."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from headstart.data.imagefolder import list_classes, list_split
from headstart.validation.layout import scan_layout
from tests.conftest import make_imagefolder
from tests.helpers import params_cfg

SRC = Path(__file__).resolve().parents[2] / "src" / "headstart"


def test_validation_accepts_exactly_the_files_training_reads(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 1, "test": 1})
    folder = data / "train" / sorted(p.name for p in (data / "train").iterdir())[0]
    first = sorted(folder.iterdir())[0]
    for suffix in (".gif", ".GIF", ".JPG", ".webp", ".svg", ".txt"):
        shutil.copy(first, folder / f"extra{suffix}")

    classes = list_classes(data)
    read = {p.relative_to(data).as_posix() for p, _ in list_split(data, "train", classes)}
    cfg = params_cfg("validate", label_set=None, min_images_per_class=1)
    layout = scan_layout(data, cfg.splits, cfg.extensions)
    accepted = {e.rel for e in layout.entries if e.split == "train"}
    stray = {f.file for f in layout.findings if f.check == "stray_files"}

    assert read == accepted
    assert {p for p in stray if p and p.startswith("train/")} == {
        f"train/{folder.name}/extra{s}" for s in (".gif", ".GIF", ".svg", ".txt")}


def _suffix_lists(tree: ast.AST) -> list[int]:
    """Line numbers of set/tuple/list literals that name at least two image suffixes."""
    known = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Set | ast.Tuple | ast.List):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(names & known) >= 2:
                lines.append(node.lineno)
    return lines


def test_the_package_holds_one_list_of_image_suffixes() -> None:
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := _suffix_lists(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert list(found) == ["data/suffixes.py"], found
