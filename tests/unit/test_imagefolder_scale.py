"""What grows with the data in reading an ImageFolder: the per-class subset and hashing."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from headstart.data import imagefolder
from headstart.data.imagefolder import list_classes, load_split, per_class_subset
from headstart.presets import Preset

from ..conftest import make_imagefolder


def _reference_subset(items, per_class, seed):
    """The selection rule as it was written: the first `per_class` of each class by seeded hash order."""
    chosen = []
    for cls in sorted({c for _, c in items}):
        members = sorted((it for it in items if it[1] == cls),
                         key=lambda it: hashlib.sha256(f"{seed}:{it[0].name}".encode()).digest())
        chosen.extend(members[:per_class])
    return sorted(chosen, key=lambda it: (it[1], it[0].name))


class _Label(int):
    """A class index that counts how often it is compared: the old subset compared every item with
    every class (items x classes); one pass compares each item a bounded number of times."""

    comparisons = 0

    def __eq__(self, other):  # noqa: D105
        _Label.comparisons += 1
        return int(self) == int(other)

    __hash__ = int.__hash__


def test_the_per_class_subset_is_one_pass_and_selects_as_before():
    rng = random.Random(1)
    items = [(Path(f"c{c}/img_{rng.randrange(10**9)}.png"), c) for c in range(50) for _ in range(rng.randrange(3, 30))]
    rng.shuffle(items)
    assert per_class_subset(items, 5, 7) == _reference_subset(items, 5, 7)
    n_classes, per = 1000, 3
    many = [(Path(f"{i}.png"), _Label(i % n_classes)) for i in range(n_classes * per)]
    _Label.comparisons = 0
    per_class_subset(many, 2, 0)
    assert _Label.comparisons <= 20 * len(many), _Label.comparisons  # the old code: about 3,000,000 here


def test_a_second_load_split_in_the_same_run_reads_no_image_twice(tmp_path: Path, monkeypatch):
    data = make_imagefolder(tmp_path / "data")
    classes, preset = list_classes(data), Preset(32, 1, (0.5,), (0.5,))
    first = load_split(data, "train", preset, classes, cache_dir=tmp_path / "cache")
    reads: list[str] = []
    real_read = Path.read_bytes
    real_open = Path.open

    def counting_read(self):
        reads.append(str(self))
        return real_read(self)

    def counting_open(self, *a, **kw):
        reads.append(str(self))
        return real_open(self, *a, **kw)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(Path, "open", counting_open)
    again = load_split(data, "train", preset, classes, cache_dir=tmp_path / "cache")
    assert [r for r in reads if r.endswith(".png")] == []  # the old code read all 36 files to hash them
    assert again.paths == first.paths and (again.x == first.x).all()


def test_a_rewritten_image_is_hashed_again(tmp_path: Path):
    data = make_imagefolder(tmp_path / "data")
    classes, preset = list_classes(data), Preset(32, 1, (0.5,), (0.5,))
    cache = tmp_path / "cache"
    items = imagefolder.list_split(data, "train", classes)
    rel = tuple(str(p.relative_to(data)) for p, _ in items)
    before = imagefolder.content_key(items, rel, preset, cache)
    assert imagefolder.content_key(items, rel, preset, cache) == before
    victim = items[3][0]
    # another image's bytes plus one: a different size even if the write lands in the same mtime tick
    victim.write_bytes(items[4][0].read_bytes() + b"\0")
    assert imagefolder.content_key(items, rel, preset, cache) != before


@pytest.mark.parametrize("cache", [None, "cache"])
def test_file_digests_match_the_bytes(tmp_path: Path, cache):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2})
    paths = sorted(data.rglob("*.png"))
    got = imagefolder.file_digests(paths, tmp_path / cache if cache else None)
    assert got == [hashlib.blake2b(p.read_bytes(), digest_size=20).hexdigest() for p in paths]
