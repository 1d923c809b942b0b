"""Per-file results keyed by content hash, so an unchanged file is never decoded twice.

The key is the file's SHA-256 plus a fingerprint of everything else the result depends on
(decoder version, pixel limit, this module's schema); renaming or moving a file keeps its entry.
SQLite because it is in the standard library and safe when two runs share a cache folder;
plain columns rather than one JSON blob, because parsing 70,000 blobs took a second.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import PIL

from headstart.errors import StorageError

SCHEMA = 2
_FIELDS = ("width", "height", "mode", "format", "error_kind", "error", "dhash", "thumb")
_STATS = ("channels", "mean", "msq", "pixels")
_COLUMNS = ("fp", "sha", *_FIELDS, *_STATS)


def fingerprint(max_pixels: int) -> str:
    return f"v{SCHEMA}-pil{PIL.__version__}-px{max_pixels}"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


class ResultCache:
    """A read-mostly map sha256 -> facts, loaded once per run and written back in one transaction."""

    def __init__(self, folder: Path, max_pixels: int) -> None:
        self.path = folder / "files.sqlite"
        self.fp = fingerprint(max_pixels)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute(f"CREATE TABLE IF NOT EXISTS facts ({', '.join(_COLUMNS)}, PRIMARY KEY (fp, sha))")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"{self.path}: cannot open the validation cache ({exc}); fix or change validate.cache_dir"
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed (no lingering read locks)."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def keys(self) -> frozenset[str]:
        """Just the hashes: cheap, so workers can start before the full rows are parsed."""
        with self._connect() as db:
            return frozenset(r[0] for r in db.execute("SELECT sha FROM facts WHERE fp = ?", (self.fp,)))

    def load(self) -> dict[str, dict[str, Any]]:
        query = f"SELECT {', '.join(_COLUMNS[1:])} FROM facts WHERE fp = ?"  # noqa: S608 - fixed names
        with self._connect() as db:
            rows = db.execute(query, (self.fp,)).fetchall()
        out = {}
        for row in rows:
            facts = dict(zip(_FIELDS, row[1:9], strict=True))
            channels, mean, msq, pixels = row[9:]
            facts["stats"] = (
                {"channels": channels, "mean": _floats(mean), "msq": _floats(msq), "pixels": pixels}
                if channels
                else None
            )
            out[row[0]] = facts
        return out

    def store(self, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
        rows = []
        for sha, facts in items:
            stats = facts.get("stats") or {}
            mean = ",".join(repr(v) for v in stats.get("mean", ())) or None
            msq = ",".join(repr(v) for v in stats.get("msq", ())) or None
            rows.append(
                (
                    self.fp,
                    sha,
                    *(facts.get(k) for k in _FIELDS),
                    stats.get("channels"),
                    mean,
                    msq,
                    stats.get("pixels"),
                )
            )
        if rows:
            marks = ", ".join("?" * len(_COLUMNS))
            with self._connect() as db:
                db.executemany(f"INSERT OR REPLACE INTO facts VALUES ({marks})", rows)  # noqa: S608
        return len(rows)
