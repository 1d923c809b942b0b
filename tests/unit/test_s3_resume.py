"""A shard streamed from S3 survives a dropped connection: the read resumes with a Range GET from the byte
reached, a bounded number of times, and a network failure beyond that is a StorageError naming the object,
never "re-pack or re-fetch this shard". The S3 client is a stub whose bodies fail as told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError, ResponseStreamingError
from urllib3.exceptions import ProtocolError

from headstart import storage
from headstart.data import shards
from headstart.errors import StorageError

from ..conftest import make_imagefolder

ROOT = "s3://bkt/packed"
SHARD = "train/train-000000.tar"


class Body:
    """A response body that breaks after `fail_after` bytes, as a reset or a stalled connection does."""

    def __init__(self, data: bytes, fail_after: int | None, error: Exception) -> None:
        self.data, self.pos, self.fail_after, self.error = data, 0, fail_after, error

    def read(self, n: int | None = None) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        if self.fail_after is not None:
            if self.pos >= self.fail_after:
                raise self.error
            end = min(end, self.fail_after)
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class Client:
    """get_object over in-memory objects; `failing` says how many responses of a key break, after how much."""

    def __init__(self, objects: dict[str, bytes], failing: int, fail_after: int = 4096,
                 error: Exception | None = None) -> None:
        self.objects, self.failing, self.fail_after = objects, failing, fail_after
        self.error = error or ResponseStreamingError(error=ProtocolError("Connection broken: ConnectionResetError"))
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.etag, self.ranges = '"v1"', True

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, IfMatch: str | None = None) -> Any:  # noqa: N803
        self.calls.append((Key, Range, IfMatch))
        if IfMatch is not None and IfMatch != self.etag:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the "
                                         "pre-conditions you specified did not hold"}}, "GetObject")
        data, start = self.objects[Key], int(Range.removeprefix("bytes=").rstrip("-")) if Range else 0
        broken = sum(1 for k, *_ in self.calls if k == Key) <= self.failing
        ranged = {"ContentRange": f"bytes {start}-{len(data) - 1}/{len(data)}"} if Range and self.ranges else {}
        return {"Body": Body(data[start if ranged else 0:], self.fail_after if broken else None, self.error),
                "ETag": self.etag, **ranged}


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    out = tmp_path / "packed"
    shards.pack(make_imagefolder(tmp_path / "data", per_class={"train": 8}, size=16), out)
    assert (out / SHARD).stat().st_size > 3 * 4096  # the stub cuts it several times over
    return out


def _serve(packed: Path, monkeypatch: pytest.MonkeyPatch, failing: int, **kw: Any) -> Client:
    objects = {f"packed/{p.relative_to(packed).as_posix()}": p.read_bytes() for p in packed.rglob("*") if p.is_file()}
    client = Client(objects, failing, **kw)
    monkeypatch.setattr(storage, "_client", lambda: client)
    monkeypatch.setattr(storage, "RESUME_BACKOFF_S", 0.0, raising=False)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    return client


def _read(root: shards.Root) -> list[tuple[str, int, bytes]]:
    index = shards.read_index(root)
    info = index.splits["train"].shards[0]
    return [(s.name, s.label, s.data) for s in shards.iter_shard(root, info, len(index.classes))]


def _shard_calls(client: Client) -> list[tuple[str | None, str | None]]:
    return [(r, m) for k, r, m in client.calls if k == f"packed/{SHARD}"]


def test_a_shard_stream_reset_after_4_kib_resumes_from_the_byte_reached(packed: Path, monkeypatch):
    client = _serve(packed, monkeypatch, failing=1)
    assert _read(ROOT) == _read(packed)  # every sample, byte for byte
    assert _shard_calls(client) == [(None, None), ("bytes=4096-", '"v1"')]  # one resume, of the same version
    client.calls.clear()  # the shard's next first response breaks too: its sha256 still matches the index
    info = shards.read_index(packed).splits["train"].shards[0]
    shards.verify_shard(ROOT, info)
    assert [r for r, _ in _shard_calls(client)] == [None, "bytes=4096-"]


def test_a_shard_whose_connection_keeps_failing_is_a_storage_error_naming_the_object(packed: Path, monkeypatch):
    client = _serve(packed, monkeypatch, failing=10**6)
    with pytest.raises(StorageError, match=rf"{ROOT}/{SHARD}: the connection failed at byte 24576") as info:
        _read(ROOT)
    assert "re-pack" not in str(info.value) and "re-fetch" not in str(info.value)
    assert len(_shard_calls(client)) == storage.max_attempts() == 6  # bounded: 1 GET + 5 resumes, 4 KiB each
    assert [r for r, _ in _shard_calls(client)][1:3] == ["bytes=4096-", "bytes=8192-"]


def test_a_read_timeout_is_a_storage_error_not_a_corrupt_shard(packed: Path, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    _serve(packed, monkeypatch, failing=10**6, error=ReadTimeoutError(endpoint_url="http://s3"))
    with pytest.raises(StorageError, match=rf"{ROOT}/{SHARD}: .*ReadTimeoutError.*check the network") as info:
        _read(ROOT)
    assert "re-pack" not in str(info.value)


def test_an_object_replaced_during_a_resumed_read_is_refused(packed: Path, monkeypatch):
    client = _serve(packed, monkeypatch, failing=1)
    client.etag = '"v2"'  # the first response was v1: change it after that GET
    original = client.get_object

    def replaced_after_first(**kw: Any) -> Any:
        response = original(**kw)
        if kw.get("Range") is None and kw["Key"].endswith(".tar"):
            response["ETag"] = '"v1"'
        return response

    client.get_object = replaced_after_first  # type: ignore[method-assign]
    with pytest.raises(StorageError, match=rf"{ROOT}/{SHARD}: the object was replaced while it was being read"):
        _read(ROOT)


def test_an_endpoint_that_ignores_range_is_refused_rather_than_read_twice(packed: Path, monkeypatch):
    client = _serve(packed, monkeypatch, failing=1)
    client.ranges = False  # answers a ranged GET with the whole object again
    with pytest.raises(StorageError, match=rf"{ROOT}/{SHARD}: the endpoint ignored the Range of a resumed read"):
        _read(ROOT)
