"""storage: local paths pass through, errors name the URI; s3 itself is in tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart import storage
from headstart.errors import StorageError


def test_local_fetch_returns_path_as_is(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    assert storage.fetch(str(f), tmp_path / "dl") == f
    assert storage.fetch(f, tmp_path / "dl") == f
    assert storage.fetch(f"file://{f}", tmp_path / "dl") == f
    assert not (tmp_path / "dl").exists()


def test_missing_local_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(StorageError, match=r"nope\.pt: no such file"):
        storage.fetch(str(missing), tmp_path)
    with pytest.raises(StorageError, match=r"nope\.pt: cannot upload"):
        storage.upload(missing, str(tmp_path / "copy.pt"))
    assert not storage.exists(str(missing))


def test_local_upload_copies_and_creates_folders(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    dest = tmp_path / "deep" / "er" / "b.bin"
    storage.upload(src, str(dest))
    assert dest.read_bytes() == b"abc" and storage.exists(str(dest))
    storage.upload(src, str(src))  # onto itself: a no-op, not an error
    assert src.read_bytes() == b"abc"


def test_s3_uri_parsing() -> None:
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/b/k") and not storage.is_s3(Path("s3:/b"))
    assert storage.split_s3("s3://bucket/a/b.pt") == ("bucket", "a/b.pt")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key", "s3://bucket/dir/"):
        with pytest.raises(StorageError, match="s3://<bucket>/<path/to/file>"):
            storage.split_s3(bad)


def test_endpoint_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert storage.endpoint_url() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert storage.endpoint_url() == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    assert storage.endpoint_url() == "http://127.0.0.1:2"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = storage._client()
    assert client.meta.endpoint_url == "http://127.0.0.1:2"
    # botocore stores max_attempts=5 (retries) as 6 attempts in total
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 6}
