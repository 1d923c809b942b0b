"""Transient S3 faults are retried (boto3 standard mode, bounded attempts); a dead endpoint fails fast and clearly.

A fault-injecting TCP proxy on 127.0.0.1 sits between storage.fetch/upload and a real moto server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headstart import storage
from headstart.errors import StorageError

from .conftest import fresh_bucket
from .faultproxy import FaultProxy


@pytest.fixture
def bucket(moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Test credentials in the environment and a fresh bucket, created directly on moto."""
    return fresh_bucket(moto, monkeypatch, "flaky")


@pytest.fixture
def proxy(moto: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """From here on S3 is reached only through the proxy."""
    with FaultProxy(int(moto.rsplit(":", 1)[1]), delay=3.0) as fp:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", fp.url)
        yield fp


def _blob(tmp_path: Path) -> Path:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"\x00weights\xff" * 1000)
    return src


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["reset", "http503"])
def test_first_connections_failing_are_retried(proxy: FaultProxy, bucket: str, tmp_path: Path, fault: str):
    src = _blob(tmp_path)
    uri = f"s3://{bucket}/w/blob.bin"
    proxy.fail_next(fault, 2)
    storage.upload(src, uri)
    proxy.fail_next(fault, 2)
    got = storage.fetch(uri, tmp_path / "dl")
    assert got.read_bytes() == src.read_bytes()
    assert proxy.seen[fault] == 4


@pytest.mark.integration
def test_a_stalled_connection_times_out_and_is_retried(proxy: FaultProxy, bucket: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HEADSTART_S3_READ_TIMEOUT", "1")
    src = _blob(tmp_path)
    uri = f"s3://{bucket}/w/slow.bin"
    proxy.fail_next("delay")  # held 3 s: longer than the 1 s read timeout
    started = time.monotonic()
    storage.upload(src, uri)
    proxy.fail_next("delay")
    assert storage.read_bytes(uri)[0] == src.read_bytes()
    assert proxy.seen["delay"] == 2 and time.monotonic() - started >= 2.0


@pytest.mark.integration
@pytest.mark.parametrize("down", ["reset", "http503"])
def test_endpoint_down_gives_a_clear_error_after_bounded_attempts(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, down: str
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    src = _blob(tmp_path)
    uri = f"s3://{bucket}/w/never.bin"
    proxy.set_default(down)
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"{uri}: could not upload .*Check the credentials.*endpoint"):
        storage.upload(src, uri)
    assert time.monotonic() - started < 20
    assert proxy.seen[down] == 3  # exactly the configured attempts, no more
    with pytest.raises(StorageError, match=rf"{uri}: could not download"):
        storage.fetch(uri, tmp_path / "dl")


@pytest.mark.integration
def test_blackholed_endpoint_fails_within_the_timeouts(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("HEADSTART_S3_READ_TIMEOUT", "1")
    proxy.set_default("hang")
    started = time.monotonic()
    with pytest.raises(StorageError, match="could not download.*timeout"):
        storage.fetch(f"s3://{bucket}/w/blob.bin", tmp_path / "dl")
    assert time.monotonic() - started < 2 * (1 + 1) + 10  # attempts x timeouts + backoff


def test_bad_timeout_setting_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HEADSTART_S3_READ_TIMEOUT", "soon")
    with pytest.raises(StorageError, match="HEADSTART_S3_READ_TIMEOUT='soon': expected a number"):
        storage._client()
