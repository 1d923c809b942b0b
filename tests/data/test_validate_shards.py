"""Validation over a sharded dataset: the same verdict as its ImageFolder, and every kind of bad
shard refused with the shard and the sample named, so nothing trains."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from headstart.data import shards
from headstart.steps import validate
from headstart.validation.cache import ResultCache
from headstart.validation.config import ValidateConfig
from headstart.validation.shardscan import scan_shards
from tests.conftest import CLASSES, make_imagefolder
from tests.helpers import params_cfg

PER_CLASS = {"train": 6, "val": 2, "test": 3}
SHARD_BYTES = 6000  # a few shards per split from 28 px PNGs


def _cfg(root: Path, **overrides) -> ValidateConfig:
    values = {"label_set": CLASSES, "cache_dir": root / "cache", "state_dir": None, "workers": 1,
              "min_images_per_class": 1}
    return params_cfg("validate", **(values | overrides))


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_imagefolder(tmp_path / "folder", per_class=dict(PER_CLASS))
    shards.pack(folder, tmp_path / "shards", target_shard_bytes=SHARD_BYTES)
    return folder, tmp_path / "shards"


def _index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def _write_index(root: Path, index: dict) -> None:
    (root / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def _first_shard(root: Path) -> dict:
    return _index(root)["splits"]["train"]["shards"][0]


def _rewrite(root: Path, edit: Callable[[str, bytes], bytes | None]) -> str:
    """Rewrite the first train shard member by member (edit returns new bytes or None to drop),
    then record its new size and sha256 in the index, so only the sample itself is wrong."""
    import hashlib

    rel = _first_shard(root)["file"]
    path = root / rel
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for member, data in members:
            new = edit(member.name, data)
            if new is None:
                continue
            member.size = len(new)
            out.addfile(member, io.BytesIO(new))
    path.write_bytes(buf.getvalue())
    index = _index(root)
    info = index["splits"]["train"]["shards"][0]
    info["bytes"], info["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    _write_index(root, index)
    return rel


def _run(root: Path, tmp_path: Path, **overrides):
    return validate.run(_cfg(tmp_path, **overrides), root, tmp_path / "report")


def _refused(result, file: str, *words: str) -> str:
    """The shards check failed, the run failed, and `file` is named with every word in its reason."""
    check = result.check("shards")
    assert not result.passed and check.status == "fail", check.message
    reasons = {f["file"]: f["reason"] for f in check.files}
    assert file in reasons, reasons
    for word in words:
        assert word.lower() in reasons[file].lower(), reasons[file]
    return reasons[file]


def test_shards_and_their_imagefolder_get_the_same_verdict(packed, tmp_path: Path) -> None:
    folder, root = packed
    assert len(_index(root)["splits"]["train"]["shards"]) > 1
    a = validate.run(_cfg(tmp_path / "a"), folder, tmp_path / "a" / "report")
    b = validate.run(_cfg(tmp_path / "b"), root, tmp_path / "b" / "report")
    assert a.passed and b.passed
    assert {c.name: c.status for c in a.checks} == {c.name: c.status for c in b.checks} | {"shards": "n/a"}
    assert (a.counts, a.n_images, a.labels, a.fingerprint) == (b.counts, b.n_images, b.labels, b.fingerprint)
    for name in ("decode", "dimensions", "mode", "pixel_stats", "class_balance", "duplicates_within_split"):
        assert a.check(name).numbers == b.check(name).numbers, name
    sa = json.loads(Path(a.reports["summary_json"]).read_text())
    sb = json.loads(Path(b.reports["summary_json"]).read_text())
    assert sa == sb | {"checks": sb["checks"] | {"shards": "n/a"}}  # what drift and DVC read: the same, but
    # an ImageFolder has no shards to check
    import pandas as pd

    ma, mb = pd.read_csv(a.reports["manifest_csv"]), pd.read_csv(b.reports["manifest_csv"])
    assert list(mb.columns) == [*ma.columns, "shard"]
    assert mb["shard"].str.match(r"^(train|val|test)/\1-\d{6}\.tar$").all()
    pd.testing.assert_frame_equal(ma, mb.drop(columns="shard"))
    assert "data:image/png;base64," in Path(b.reports["report_html"]).read_text()


def test_worker_processes_give_the_same_manifest_and_a_warm_run_decodes_nothing(packed, tmp_path: Path) -> None:
    _, root = packed
    cfg = _cfg(tmp_path)
    args = (root, cfg.splits, cfg.extensions, cfg.max_pixels)
    _, serial, _, thumbs = scan_shards(*args, 1, None)
    cache = ResultCache(tmp_path / "c", cfg.max_pixels)
    _, pooled, stats, pooled_thumbs = scan_shards(*args, 2, cache, force_pool=True)
    assert stats.workers == 2 and stats.decoded == len(serial)
    assert serial.equals(pooled) and thumbs == pooled_thumbs
    _, warm, stats, _ = scan_shards(*args, 2, cache, force_pool=True)
    assert stats.cache_hits == len(serial) and warm.equals(serial)


def test_truncated_shard_is_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    rel = _first_shard(root)["file"]
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2 + 100])
    _refused(_run(root, tmp_path), rel, "truncated")


def test_checksum_that_does_not_match_the_index_is_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    index = _index(root)
    rel = index["splits"]["val"]["shards"][0]["file"]
    index["splits"]["val"]["shards"][0]["sha256"] = "0" * 64
    _write_index(root, index)
    _refused(_run(root, tmp_path), rel, "does not match index.json", "sha256")


def test_sample_without_an_image_is_refused_naming_it(packed, tmp_path: Path) -> None:
    _, root = packed
    rel = _rewrite(root, lambda name, data: None if name == "000000001.png" else data)
    _refused(_run(root, tmp_path), rel, "sample 000000001", "no image")


def test_sample_with_an_unknown_class_is_refused_naming_it(packed, tmp_path: Path) -> None:
    _, root = packed
    rel = _rewrite(root, lambda name, data: b"7" if name == "000000000.cls" else data)
    _refused(_run(root, tmp_path), rel, "sample 000000000", "unknown class")


def _as_text_pgm(png: bytes) -> bytes:
    """The same image as an ASCII PGM whose comment lines are any text: the bytes an attacker writes."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    rows = "\n".join(" ".join(map(str, row)) for row in pixels)
    return f"P2\n# import os; os.system('anything')\n{pixels.shape[1]} {pixels.shape[0]}\n255\n{rows}\n".encode()


@pytest.mark.parametrize("path", ["../../escape.pgm", "circle/bell\x07.pgm"])  # every rule: test_member_paths
def test_sample_whose_path_is_not_a_plain_relative_name_is_refused_naming_it(
        packed, tmp_path: Path, path: str) -> None:
    """A .path member that would escape the folder it is joined to (its bytes a valid PGM, whose comment lines
    are any text) fails the shards check, naming the shard and the sample, so nothing trains on it."""
    _, root = packed

    def craft(name: str, data: bytes) -> bytes | None:
        if name == "000000000.path":
            return path.encode()
        return _as_text_pgm(data) if name == "000000000.png" else data

    rel = _rewrite(root, craft)
    _refused(_run(root, tmp_path), rel, "sample 000000000", ".path", "not a plain relative path")


def test_index_counts_that_disagree_with_the_shards_are_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    index = _index(root)
    shard = index["splits"]["train"]["shards"][0]
    shard["count"] += 1
    index["splits"]["train"]["count"] += 1
    _write_index(root, index)
    _refused(_run(root, tmp_path), shard["file"], "index.json says")


def test_index_class_counts_that_disagree_with_the_shards_are_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    index = _index(root)
    shard = index["splits"]["train"]["shards"][0]
    a, b = sorted(shard["class_counts"])[:2] if len(shard["class_counts"]) > 1 else (CLASSES[0], CLASSES[1])
    shard["class_counts"][a] = shard["class_counts"].get(a, 0) + 1
    shard["class_counts"][b] = shard["class_counts"].get(b, 0) - 1
    _write_index(root, index)
    _refused(_run(root, tmp_path), shard["file"], "class counts")


def test_split_total_that_disagrees_with_its_shards_is_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    index = _index(root)
    index["splits"]["test"]["count"] += 5
    _write_index(root, index)
    _refused(_run(root, tmp_path), "index.json", "split 'test'")


def test_shard_listed_but_missing_is_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    rel = _first_shard(root)["file"]
    (root / rel).unlink()
    _refused(_run(root, tmp_path), rel, "missing")


def test_shard_present_but_unlisted_is_refused(packed, tmp_path: Path) -> None:
    _, root = packed
    shutil.copy(root / _first_shard(root)["file"], root / "train" / "train-000099.tar")
    _refused(_run(root, tmp_path), "train/train-000099.tar", "not listed")


def test_bad_shard_stops_the_cli_before_training(packed, tmp_path: Path, capsys) -> None:
    from headstart import cli

    _, root = packed
    rel = _first_shard(root)["file"]
    (root / rel).write_bytes((root / rel).read_bytes()[:700])
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"validate": _cfg(tmp_path).model_dump(mode="json")}))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", "--data", str(root), "--out", str(tmp_path / "v"), "--params", str(params),
                  "--no-track"])  # fmt: skip
    assert exit_info.value.code == 3
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert "No training was started" in said and "fail shards" in said and rel in said
