"""bundle.get_folder against a real S3 API (moto): an object key is data, so a key that would land outside
the destination folder ('..', or a '/' after the prefix making it absolute) is refused before any download."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart import storage
from headstart.cluster import bundle
from headstart.errors import StorageError

from .conftest import fresh_bucket


@pytest.mark.integration
@pytest.mark.parametrize("rel", ["../escaped.txt", "{tmp}/abs/escaped.txt"])
def test_get_folder_refuses_an_object_key_that_leaves_dest(tmp_path: Path, moto: str, monkeypatch, rel: str):
    bucket = fresh_bucket(moto, monkeypatch, "bundle")
    client = storage._client()  # noqa: SLF001 - the shared client, as the code under test uses
    client.put_object(Bucket=bucket, Key="staged/index.json", Body=b"{}")
    bad = "staged/" + rel.format(tmp=tmp_path)  # 'staged//tmp/...': the key after the prefix is absolute
    client.put_object(Bucket=bucket, Key=bad, Body=b"planted")
    assert bad in {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="staged/")["Contents"]}
    dest = tmp_path / "pod" / "data"
    try:
        bundle.get_folder(f"s3://{bucket}/staged", dest)
        refused = None
    except StorageError as exc:
        refused = str(exc)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == []  # not the planted file outside dest, and nothing inside it either
    assert refused is not None and bad in refused and "outside" in refused


@pytest.mark.integration
def test_get_folder_still_copies_a_staged_folder(tmp_path: Path, moto: str, monkeypatch):
    bucket = fresh_bucket(moto, monkeypatch, "bundle")
    src = tmp_path / "src"
    (src / "train").mkdir(parents=True)
    (src / "index.json").write_text("{}")
    (src / "train" / "train-000000.tar").write_bytes(b"x" * 100)
    assert bundle.put_folder(src, f"s3://{bucket}/staged") == 2
    got = bundle.get_folder(f"s3://{bucket}/staged", tmp_path / "dest")
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == [
        "index.json", "train/train-000000.tar"]
