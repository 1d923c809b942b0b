"""Walk the ImageFolder tree without trusting it: names, symlinks, stray files, splits.

Runs before anything is opened, so a file with a hostile name or a link out of the data folder
is reported and never read; unsafe entries are left out of the manifest. A link to a file in the
DVC cache of the repository holding the data folder (DVC's cache.type symlink) is what DVC checked
out, so it is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from headstart.data.names import shown, unsafe_reason
from headstart.errors import DataError
from headstart.validation.findings import Finding


@dataclass(frozen=True, slots=True)
class Entry:
    """An image candidate: `rel` is split/class/name under `root` (one shared str), so an entry
    costs its name and four pointers; `path` is where to read it."""

    rel: str
    split: str
    label: str
    root: str

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.rel)


@dataclass
class Layout:
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    split_dirs: list[str] = field(default_factory=list)
    class_dirs: dict[str, list[str]] = field(default_factory=dict)


def scan_layout(root: Path, splits: tuple[str, ...], extensions: frozenset[str]) -> Layout:
    """Three levels, split/class/file; anything else is a finding."""
    if not root.exists():
        raise DataError(
            f"{root}: data folder not found. Run `headstart data` first or pass the right --data."
        )
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder laid out as <split>/<class>/<image>")
    real_root = Path(os.path.realpath(root))
    inside = (real_root, *dvc_cache(root))
    root_str = str(root)
    layout = Layout()
    for split_entry in _entries(root, inside, "", layout):
        rel = split_entry.name
        if not split_entry.is_dir():
            layout.findings.append(Finding("stray_files", "file outside any split/class folder", rel))
            continue
        if split_entry.name not in splits:
            layout.findings.append(
                Finding("splits", f"unexpected split folder (splits: {list(splits)})", rel + "/")
            )
            continue
        layout.split_dirs.append(split_entry.name)
        classes = layout.class_dirs.setdefault(split_entry.name, [])
        for class_entry in _entries(Path(split_entry.path), inside, rel + "/", layout):
            crel = f"{rel}/{class_entry.name}"
            if not class_entry.is_dir():
                layout.findings.append(Finding("stray_files", "file outside any class folder", crel))
                continue
            classes.append(class_entry.name)
            for item in _entries(Path(class_entry.path), inside, crel + "/", layout):
                irel = f"{crel}/{item.name}"
                if item.is_dir():
                    layout.findings.append(
                        Finding("stray_files", "nested folder inside a class folder", irel + "/")
                    )
                elif os.path.splitext(item.name)[1].lower() not in extensions:
                    layout.findings.append(Finding("stray_files", "not an image file extension", irel))
                else:
                    layout.entries.append(Entry(irel, split_entry.name, class_entry.name, root_str))
    for split in splits:
        if split not in layout.split_dirs:
            layout.findings.append(Finding("splits", "missing split folder", split + "/"))
    layout.split_dirs.sort()
    layout.entries.sort(key=lambda e: e.rel)
    return layout


def dvc_cache(root: Path) -> tuple[Path, ...]:
    """The resolved cache folder of the DVC repository holding `root` (the nearest folder above it with a
    .dvc/), or nothing: with DVC's cache.type symlink a checked-out file is a link into it. Its place is
    .dvc/cache or cache.dir, read by DVC's own config reader (repository, local, global and system)."""
    from dvc.config import Config, ConfigError

    for repo in Path(os.path.abspath(root)).parents:
        dot = repo / ".dvc"
        if not dot.is_dir():
            continue
        try:
            where = Path(Config(dvc_dir=str(dot))["cache"].get("dir") or dot / "cache")
        except ConfigError:
            return ()  # an unreadable config: no cache is trusted, so its links stay findings
        return (Path(os.path.realpath(where)),) if where.is_dir() else ()
    return ()


def _entries(folder: Path, inside: tuple[Path, ...], prefix: str, layout: Layout) -> list[os.DirEntry[str]]:
    """Safe children of a folder, sorted; unsafe names and links that leave `inside[0]` (the data folder)
    become findings, except a link to a file in the DVC cache (`inside[1:]`)."""
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({exc.strerror}); check permissions") from exc
    safe = []
    for child in children:
        rel = prefix + shown(child.name)
        reason = unsafe_reason(child.name)
        if reason:
            layout.findings.append(Finding("file_names", reason, rel))
            continue
        if child.is_symlink():
            target = Path(os.path.realpath(child.path))
            if not target.exists():
                layout.findings.append(Finding("symlinks", "dangling symlink", rel))
                continue
            if not target.is_relative_to(inside[0]) and not (
                target.is_file() and any(target.is_relative_to(cache) for cache in inside[1:])
            ):
                layout.findings.append(Finding("symlinks", "symlink points outside the data folder", rel))
                continue
        safe.append(child)
    return safe
