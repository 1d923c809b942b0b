"""The dataset version DVC pins: the md5 in `<data>.dvc`, read in one place for every step."""

from __future__ import annotations

from pathlib import Path

import yaml

from headstart.errors import DataError


def pin_file(data_dir: Path) -> Path:
    """`data.dvc` next to `data/`: where `dvc add data` writes the pin."""
    folder = data_dir if data_dir.name else data_dir.resolve()  # "." has no name
    return folder.with_name(folder.name + ".dvc")


def parse_pin(text: str, where: str) -> str | None:
    """The md5 of the first output of a .dvc file's text, or None when it names no md5 (not committed yet).

    Raises DataError naming `where` when the text is not a .dvc file, so a broken pin is never
    mistaken for "no pin" (which would leave a registered version without its data lineage).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{where}: not valid YAML ({exc}); restore it with `git checkout {where}` "
                        "or re-create it with `dvc add`") from exc
    outs = doc.get("outs") if isinstance(doc, dict) else None
    if not isinstance(outs, list) or not outs or not isinstance(outs[0], dict):
        raise DataError(f"{where}: no `outs:` list as `dvc add` writes it; restore it with "
                        f"`git checkout {where}` or re-create it with `dvc add`")
    md5 = outs[0].get("md5")
    if md5 is not None and not isinstance(md5, str):
        raise DataError(f"{where}: outs[0].md5 is {md5!r}, not a hash string; re-create it with `dvc add`")
    return md5 or None


def pinned_md5(data_dir: Path) -> str | None:
    """The md5 `<data_dir>.dvc` pins, or None when there is no such file (the data is not under DVC)."""
    pin = pin_file(data_dir)
    if not pin.is_file():
        return None
    return parse_pin(pin.read_text(encoding="utf-8"), str(pin))
