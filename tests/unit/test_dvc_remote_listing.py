"""A DVC folder listing is data anyone who can push may write: its hashes never name a file outside the remote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from headstart.data.remote import object_url, open_remote
from headstart.errors import DataError


def _pushed(tmp_path: Path, listing: list[dict[str, str]]) -> tuple[Path, Path]:
    """A repository whose `packed.dvc` tracks a folder, and a local remote holding only its `.dir` listing."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    (repo / ".dvc").mkdir(parents=True)
    raw = json.dumps(listing).encode()
    md5 = hashlib.md5(raw).hexdigest() + ".dir"
    (repo / "packed.dvc").write_text(f"outs:\n- md5: {md5}\n  path: packed\n  hash: md5\n")
    target = remote / "files" / "md5" / md5[:2] / md5[2:]
    target.parent.mkdir(parents=True)
    target.write_bytes(raw)
    return repo, remote


def test_a_listing_hash_that_climbs_out_of_the_remote_is_refused_naming_the_listing(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not a shard")
    repo, remote = _pushed(tmp_path, [{"md5": "ab/../../../../secret.txt", "relpath": "index.json"}])
    with pytest.raises(DataError, match=r"files/md5/.*not a DVC folder listing.*not a DVC md5"):
        open_remote(repo / "packed", remote=str(remote))


def test_a_well_formed_listing_maps_each_file_to_its_object(tmp_path: Path):
    md5 = "0123456789abcdef0123456789abcdef"
    repo, remote = _pushed(tmp_path, [{"md5": md5, "relpath": "index.json"}])
    root = open_remote(repo / "packed", remote=str(remote))
    assert root.objects == {"index.json": str(remote / "files" / "md5" / "01" / md5[2:])}


@pytest.mark.parametrize("md5", ["", "../x", "0123456789ABCDEF0123456789ABCDEF", "0" * 31, "0" * 32 + ".dir/.."])
def test_object_url_takes_only_an_md5(md5: str):
    with pytest.raises(DataError, match="not a DVC md5"):
        object_url("s3://bucket/prefix", md5)
