"""A shard streamed from a real S3 API (moto) whose first response breaks after 4 KiB: the read resumes with
a Range GET against the server and yields the same samples, byte for byte, as the local shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ResponseStreamingError
from urllib3.exceptions import ProtocolError

from headstart import storage
from headstart.cluster import bundle
from headstart.data import shards

from ..conftest import make_imagefolder
from .conftest import fresh_bucket

pytestmark = pytest.mark.integration


class Breaks:
    """The real body, reset once `limit` bytes have come through."""

    def __init__(self, body: Any, limit: int) -> None:
        self.body, self.left = body, limit

    def read(self, n: int | None = None) -> bytes:
        if self.left <= 0:
            raise ResponseStreamingError(error=ProtocolError("Connection broken: ConnectionResetError(104)"))
        chunk = self.body.read(min(n if n and n > 0 else self.left, self.left))
        self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        self.body.close()


def test_a_reset_shard_stream_resumes_against_a_real_s3_api(moto: str, tmp_path: Path, monkeypatch):
    bucket = fresh_bucket(moto, monkeypatch, "resume")
    packed = tmp_path / "packed"
    shards.pack(make_imagefolder(tmp_path / "data", per_class={"train": 8}, size=16), packed)
    bundle.put_folder(packed, f"s3://{bucket}/packed")
    client, ranges = storage._client(), []
    get_object = client.get_object

    def first_breaks(**kw: Any) -> Any:
        response = get_object(**kw)
        ranges.append(kw.get("Range"))
        if kw["Key"].endswith(".tar") and kw.get("Range") is None:
            response["Body"] = Breaks(response["Body"], 4096)
        return response

    monkeypatch.setattr(client, "get_object", first_breaks)
    monkeypatch.setattr(storage, "_client", lambda: client)
    monkeypatch.setattr(storage, "RESUME_BACKOFF_S", 0.0, raising=False)
    root = f"s3://{bucket}/packed"
    index = shards.read_index(root)
    info = index.splits["train"].shards[0]
    remote = [(s.name, s.label, s.data) for s in shards.iter_shard(root, info, len(index.classes))]
    local = [(s.name, s.label, s.data) for s in shards.iter_shard(packed, info, len(index.classes))]
    assert remote == local and len(remote) == info.count
    assert ranges == [None, None, "bytes=4096-"]  # index.json, the shard, its resumed read
