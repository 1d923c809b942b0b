"""A name that comes from data never becomes a path outside its folder: a shard sample's .path is held to the
ImageFolder scan's rule when packing and reading, and register writes the serving check's images as
dest/<i><ext>, whatever the samples are called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.data import shards
from headstart.errors import DataError
from headstart.serving import verify
from tests.conftest import make_imagefolder

# an ASCII PGM decodes as an image, and its comment lines can be any text (a .pth line, a shell rc line)
PGM = b"P2\n# import os; os.system('anything')\n2 2\n255\n0 255\n255 0\n"
ESCAPE = "../../escape.pgm"


def _crafted(root: Path) -> Path:
    """A packed root written with the project's shard writer whose first test sample is called ESCAPE."""
    classes = ("a", "b")
    (root / "test").mkdir(parents=True)
    writer = shards._ShardWriter(root, "test/test-000000.tar", classes)  # noqa: SLF001 - what pack uses
    writer.add("000000000", ESCAPE, 0, "pgm", PGM)
    writer.add("000000001", "b/fine.pgm", 1, "pgm", PGM)
    info = writer.close()
    index = shards.ShardIndex(classes=classes, target_shard_bytes=1 << 20, splits={
        "test": shards.SplitIndex(count=info.count, class_counts=info.class_counts, shards=(info,))})
    (root / shards.INDEX).write_text(json.dumps(index.to_dict()))
    return root


@pytest.mark.parametrize(
    ("rel", "reason"),
    [("coat/img_1.png", None), ("café/ü.png", None), (ESCAPE, "'..'"), ("coat/../x.png", "'..'"),
     ("/etc/passwd", "absolute"), ("coat//x.png", "normalised"), ("./x.png", "normalised"), ("", "normalised"),
     ("coat\\x.png", "backslash"), ("coat/x\n.png", "control"), ("coat/ x.png", "whitespace")],
)
def test_unsafe_path_reason(rel: str, reason: str | None) -> None:
    from headstart.data.names import unsafe_path_reason

    got = unsafe_path_reason(rel)
    assert (got is None) if reason is None else (reason in got), got


def test_reading_a_sample_whose_path_leaves_the_folder_names_the_shard_and_sample(tmp_path: Path) -> None:
    root = _crafted(tmp_path / "shards")
    index = shards.read_index(root)
    with pytest.raises(DataError, match=r"test/test-000000\.tar: sample 000000000: \.path '\.\./\.\./escape\.pgm'"):
        list(shards.iter_shard(root, index.splits["test"].shards[0], len(index.classes)))


def test_serving_images_of_a_crafted_shard_write_nothing_outside_dest(tmp_path: Path) -> None:
    root = _crafted(tmp_path / "shards")
    work = tmp_path / "work"
    dest = work / "staged"  # dest / "test/../../escape.pgm" would be work/escape.pgm
    try:
        verify.serving_images(root, [f"test/{ESCAPE}", "test/b/fine.pgm"], dest)
        refused = None
    except DataError as exc:
        refused = str(exc)
    outside = [p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file() and dest not in p.parents]
    assert outside == []
    assert refused is not None and ESCAPE in refused


def test_serving_images_are_named_by_position_not_by_the_data(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 2}, size=16)
    root = tmp_path / "shards"
    shards.pack(folder, root, target_shard_bytes=1024)
    names = sorted(p.relative_to(folder).as_posix() for p in (folder / "test").rglob("*.png"))[::-1]
    dest = tmp_path / "staged"
    got = verify.serving_images(root, names, dest)
    assert got == [dest / f"{i}.png" for i in range(len(names))]
    assert [p.read_bytes() for p in got] == [(folder / n).read_bytes() for n in names]


def test_serving_images_refuse_an_evaluation_name_that_leaves_the_data_folder(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 1}, size=16)
    with pytest.raises(DataError, match="not a plain relative path"):
        verify.serving_images(folder, ["test/../../secret.png"], tmp_path / "unused")


def test_pack_refuses_a_file_name_the_imagefolder_scan_refuses(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 1}, size=16)
    bad = folder / "test/circle/..first.png"  # sorts first in its class: the serving check's pick
    (folder / "test/circle/test_0000.png").rename(bad)
    with pytest.raises(DataError, match=r"test/circle/\.\.first\.png: name contains '\.\.'"):
        shards.pack(folder, tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


def test_a_shard_listing_cached_with_an_unsafe_name_is_read_again(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 2}, size=16)
    root, cache = tmp_path / "shards", tmp_path / "cache"
    shards.pack(folder, root)
    listed = shards.split_items(root, "test", cache)
    (memo,) = (cache / "shard-items").iterdir()
    poisoned = json.loads(memo.read_text())
    poisoned[0][0] = ESCAPE
    memo.write_text(json.dumps(poisoned))
    assert shards.split_items(root, "test", cache) == listed


def test_a_shard_sha256_that_is_not_hex_never_names_a_cache_file(tmp_path: Path) -> None:
    """The index's sha256 names the shard's listing in the cache (shard-items/<sha256>.json)."""
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 1}, size=16)
    root, cache = tmp_path / "work" / "shards", tmp_path / "work" / "cache"
    shards.pack(folder, root)
    index = json.loads((root / shards.INDEX).read_text())
    index["splits"]["test"]["shards"][0]["sha256"] = "../../escape"
    (root / shards.INDEX).write_text(json.dumps(index))
    try:
        shards.split_items(root, "test", cache)
        refused = None
    except DataError as exc:
        refused = str(exc)
    assert not (tmp_path / "work" / "escape.json").exists()  # cache/shard-items/../../escape.json
    assert refused is not None and "not 64 lowercase hex digits" in refused
