"""Content-hash cache: a warm run decodes nothing, a changed file is decoded again."""

from __future__ import annotations

from pathlib import Path

from headstart.validation.cache import ResultCache
from headstart.validation.layout import scan_layout
from headstart.validation.scan import scan_files
from tests.helpers import params_cfg

CFG = params_cfg("validate", label_set=None, min_images_per_class=1)


def _paths(data: Path) -> list[str]:
    return [e.path for e in scan_layout(data, CFG.splits, CFG.extensions).entries]


def test_second_scan_hits_the_cache_and_returns_the_same_facts(
    tiny_imagefolder: Path, tmp_path: Path
) -> None:
    cache = ResultCache(tmp_path / "cache", CFG.max_pixels)
    paths = _paths(tiny_imagefolder)
    cold, cold_stats = scan_files(paths, CFG.max_pixels, 1, cache)
    warm, warm_stats = scan_files(paths, CFG.max_pixels, 1, cache)
    assert (cold_stats.decoded, cold_stats.cache_hits) == (len(paths), 0)
    assert (warm_stats.decoded, warm_stats.cache_hits) == (0, len(paths))
    assert warm == cold


def test_cache_is_keyed_by_content_not_by_name(tiny_imagefolder: Path, tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache", CFG.max_pixels)
    scan_files(_paths(tiny_imagefolder), CFG.max_pixels, 1, cache)
    first = tiny_imagefolder / "train/circle/train_0000.png"
    first.rename(first.with_name("renamed.png"))
    (tiny_imagefolder / "train/square/train_0000.png").write_bytes(b"edited")
    _, stats = scan_files(_paths(tiny_imagefolder), CFG.max_pixels, 1, cache)
    assert (stats.decoded, stats.cache_hits) == (1, stats.files - 1)


def test_other_pixel_limit_does_not_reuse_results(tiny_imagefolder: Path, tmp_path: Path) -> None:
    paths = _paths(tiny_imagefolder)
    scan_files(paths, CFG.max_pixels, 1, ResultCache(tmp_path / "cache", CFG.max_pixels))
    _, stats = scan_files(paths, 100, 1, ResultCache(tmp_path / "cache", 100))
    assert stats.cache_hits == 0


def test_worker_pool_gives_the_same_facts_as_in_process(tiny_imagefolder: Path, tmp_path: Path) -> None:
    paths = _paths(tiny_imagefolder)
    serial, _ = scan_files(paths, CFG.max_pixels, 1, None)
    pooled, stats = scan_files(
        paths, CFG.max_pixels, 2, ResultCache(tmp_path / "c", CFG.max_pixels), force_pool=True
    )
    assert stats.workers == 2
    assert pooled == serial
    warm, stats = scan_files(
        paths, CFG.max_pixels, 2, ResultCache(tmp_path / "c", CFG.max_pixels), force_pool=True
    )
    assert stats.cache_hits == len(paths) and warm == serial


def test_warm_scan_reads_only_the_rows_of_its_own_files(
    tiny_imagefolder: Path, tmp_path: Path, monkeypatch
) -> None:
    """A cache shared with other datasets: a run reads its own files' rows, not every row ever cached."""
    import sqlite3

    cache = ResultCache(tmp_path / "cache", CFG.max_pixels)
    other = {f"{i:064x}": {"width": 1, "height": 1, "mode": "L", "format": "PNG"} for i in range(3000)}
    cache.store(other.items())
    paths = _paths(tiny_imagefolder)
    scan_files(paths, CFG.max_pixels, 1, cache)

    read = {"rows": 0}
    connect = sqlite3.connect

    def counting(*args, **kwargs):
        db = connect(*args, **kwargs)

        def row(cursor, values):
            read["rows"] += 1
            return values

        db.row_factory = row
        return db

    monkeypatch.setattr(sqlite3, "connect", counting)
    _, stats = scan_files(paths, CFG.max_pixels, 1, cache)
    assert stats.cache_hits == len(paths)
    assert read["rows"] <= len(paths), f"read {read['rows']} cached rows for {len(paths)} files"
