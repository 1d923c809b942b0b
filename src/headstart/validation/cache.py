"""Per-file results keyed by content hash, so an unchanged file is never decoded twice.

The key is the file's SHA-256 plus a fingerprint of everything else the result depends on
(decoder version, pixel limit, this module's schema); renaming or moving a file keeps its entry.
SQLite because it is in the standard library and safe when two runs share a cache folder;
plain columns rather than one JSON blob, because parsing 70,000 blobs took a second. A run asks
only for the hashes it holds, a batch at a time (the scan workers ask for their own chunk), so
a cache shared by many datasets and versions costs each run only its own rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import PIL

from headstart.errors import StorageError
from headstart.validation.decode import FACTS as _FIELDS

SCHEMA = 2
BATCH = 500  # hashes per query: under SQLite's bound-parameter limit (999 in old builds)
_STATS = ("channels", "mean", "msq", "pixels")
_COLUMNS = ("fp", "sha", *_FIELDS, *_STATS)


def _facts(row: tuple[Any, ...]) -> dict[str, Any]:
    facts = dict(zip(_FIELDS, row[1:9], strict=True))
    channels, pixels = row[9], row[12]
    mean, msq = ([float(v) for v in text.split(",")] if text else None for text in row[10:12])
    facts["stats"] = {"channels": channels, "mean": mean, "msq": msq, "pixels": pixels} if channels else None
    return facts


class ResultCache:
    """A read-mostly map sha256 -> facts, read a chunk's hashes at a time, written back per chunk.

    Holds only its path and fingerprint, so it pickles into the scan workers."""

    def __init__(self, folder: Path, max_pixels: int) -> None:
        self.path = folder / "files.sqlite"
        self.fp = f"v{SCHEMA}-pil{PIL.__version__}-px{max_pixels}"  # what else a result depends on
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

    def load(self, shas: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Cached facts for just these hashes (the ones this run or chunk holds), by hash."""
        wanted = sorted(set(shas))
        query = f"SELECT {', '.join(_COLUMNS[1:])} FROM facts WHERE fp = ? AND sha IN "  # noqa: S608
        out: dict[str, dict[str, Any]] = {}
        if not wanted:
            return out
        with self._connect() as db:
            for i in range(0, len(wanted), BATCH):
                part = wanted[i : i + BATCH]
                for row in db.execute(query + f"({', '.join('?' * len(part))})", (self.fp, *part)):
                    out[row[0]] = _facts(row)
        return out

    def store(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        rows = []
        for sha, facts in items:
            stats = facts.get("stats") or {}
            mean, msq = (",".join(repr(v) for v in stats.get(k, ())) or None for k in ("mean", "msq"))
            rows.append((self.fp, sha, *(facts.get(k) for k in _FIELDS), stats.get("channels"),
                         mean, msq, stats.get("pixels")))  # fmt: skip
        if rows:
            marks = ", ".join("?" * len(_COLUMNS))
            with self._connect() as db:
                db.executemany(f"INSERT OR REPLACE INTO facts VALUES ({marks})", rows)  # noqa: S608
