"""Read and write local paths and s3:// URIs, so steps accept either without caring which.

The S3 client is built on first use (never at import time) and honours `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`, so the same code talks to AWS, MinIO or a moto server on loopback.

Transient faults (dropped connections, timeouts, throttling, 5xx) are retried by botocore's standard
retry mode with a bounded number of attempts, so a call fails with a StorageError within a bounded time:
at most `AWS_MAX_ATTEMPTS` (default 6) x (connect + read timeout) plus backoff (under 20 s per retry).
The timeouts are `HEADSTART_S3_CONNECT_TIMEOUT` (default 10 s) and `HEADSTART_S3_READ_TIMEOUT` (60 s).
botocore does not retry a body cut off mid-stream: `ObjectStream` resumes it from the byte reached.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from headstart.errors import StorageError

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_ATTEMPTS = 6
DEFAULT_TIMEOUTS = {"HEADSTART_S3_CONNECT_TIMEOUT": 10.0, "HEADSTART_S3_READ_TIMEOUT": 60.0}
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
RESUME_BACKOFF_S = 0.5  # before the first resumed read of a streamed object; doubles for each next one


def is_s3(uri: str | Path) -> TypeGuard[str]:
    """True for `s3://bucket/key` strings; a Path is always local."""
    return isinstance(uri, str) and uri.startswith(S3_SCHEME)


def join(base: str | Path, *parts: str) -> str:
    """`join("s3://b/ckpt", "scratch")` -> "s3://b/ckpt/scratch"; local paths joined as paths."""
    if is_s3(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(_local(base).joinpath(*parts))


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b.pt` -> ("bucket", "a/b.pt")."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise StorageError(f"{uri}: not an object URI; write it as s3://<bucket>/<path/to/file>")
    return bucket, key


def split_folder(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` or `s3://bucket/a/b/` -> ("bucket", "a/b/"); `s3://bucket` -> ("bucket", "")."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: not a folder URI; write it as s3://<bucket>[/<prefix>]")
    key = key.strip("/")
    return bucket, f"{key}/" if key else ""


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment, None for AWS itself."""
    return next((os.environ[var] for var in ENDPOINT_VARS if os.environ.get(var)), None)


def _client() -> Any:
    """A fresh boto3 S3 client; built per call so changed env vars (tests, CLI) take effect."""
    import boto3  # imported lazily: slow to import and only s3:// URIs need it
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        region = boto3.session.Session().region_name or "us-east-1"
        connect, read = (_env_number(var, default) for var, default in DEFAULT_TIMEOUTS.items())
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url(),
            region_name=region,
            config=Config(retries={"mode": "standard", "total_max_attempts": max_attempts()},
                          connect_timeout=connect, read_timeout=read),
        )
    except BotoCoreError as exc:
        raise StorageError(f"could not create an S3 client: {exc}. {_hint()}") from exc


def max_attempts() -> int:
    """Attempts per S3 call, retries included: `AWS_MAX_ATTEMPTS` (as the AWS SDKs read it), default 6."""
    return max(1, int(_env_number("AWS_MAX_ATTEMPTS", DEFAULT_ATTEMPTS)))


def _env_number(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StorageError(f"{var}={raw!r}: expected a number") from None
    if value <= 0:
        raise StorageError(f"{var}={raw!r}: expected a positive number")
    return value


def _hint() -> str:
    return (
        "Check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE), the endpoint "
        f"(AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; now {endpoint_url() or 'AWS default'}) "
        "and that the bucket exists and you may access it."
    )


def _code(exc: BaseException | None) -> str:
    """The S3 error code, also when boto3 wraps the ClientError (S3UploadFailedError)."""
    while exc is not None:
        response = getattr(exc, "response", None)  # None on timeouts and dropped connections
        if isinstance(response, dict) and (code := response.get("Error", {}).get("Code")):
            return str(code)
        exc = exc.__cause__ or exc.__context__
    return ""


def _error(uri: str, action: str, exc: Exception) -> StorageError:
    code = _code(exc)
    if code in _MISSING_CODES:
        return StorageError(f"{uri}: no such object or bucket ({code}) while trying to {action}. {_hint()}")
    return StorageError(f"{uri}: could not {action}: {exc}. {_hint()}")


def _s3_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error, OSError)


@contextlib.contextmanager
def _s3_call(uri: str | Path, action: str, ignore: frozenset[str] = frozenset()) -> Iterator[None]:
    """An S3 call (or a local write it needs) failing is a StorageError naming `uri` and `action`, unless its
    error code is in `ignore` (then the block just ends there)."""
    try:
        yield
    except _s3_errors() as exc:
        if _code(exc) not in ignore:
            raise _error(uri, action, exc) from exc


def _local(uri: str | Path) -> Path:
    return Path(str(uri).removeprefix(FILE_SCHEME)).expanduser()


def fetch(uri: str | Path, dest_dir: Path) -> Path:
    """Return a local path for `uri`: local files as they are, s3 objects downloaded into dest_dir."""
    if not is_s3(uri):
        path = _local(uri)
        if not path.exists():
            raise StorageError(
                f"{uri}: no such file or directory (relative to {Path.cwd()}); check the path."
            )
        return path
    bucket, key = split_s3(uri)
    dest = Path(dest_dir) / PurePosixPath(key).name
    with _s3_call(uri, "download"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        _client().download_file(bucket, key, str(dest))
    return dest


def upload(path: Path, uri: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Copy a local file to `uri` (an s3:// object or another local path).

    An S3 object appears only once its upload completes (multipart included), never half written;
    `metadata` is stored with the object (S3 only; local copies have none).
    """
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: cannot upload, no such file; check the path.")
    if not is_s3(uri):
        dest = _local(uri)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists() or not dest.samefile(path):
                shutil.copyfile(path, dest)
        except OSError as exc:
            raise StorageError(f"{uri}: could not copy {path} there: {exc}; check permissions.") from exc
        return
    bucket, key = split_s3(uri)
    with _s3_call(uri, f"upload {path}"):
        extra = {"Metadata": metadata} if metadata else None
        _client().upload_file(str(path), bucket, key, ExtraArgs=extra)


def exists(uri: str | Path) -> bool:
    """Whether the file or s3 object exists; errors other than 'not found' raise StorageError."""
    if not is_s3(uri):
        return _local(uri).exists()
    bucket, key = split_s3(uri)
    with _s3_call(uri, "check", ignore=frozenset({"404", "NoSuchKey", "NotFound"})):
        _client().head_object(Bucket=bucket, Key=key)
        return True
    return False


def list_names(folder: str | Path, prefix: str = "") -> list[str]:
    """Names of the files (objects) directly in `folder` that start with `prefix`, sorted."""
    if not is_s3(folder):
        path = _local(folder)
        return sorted(p.name for p in path.glob(f"{prefix}*") if p.is_file()) if path.is_dir() else []
    bucket, key = split_folder(folder)
    with _s3_call(folder, "list"):
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + prefix,
                                                                    Delimiter="/")
        return sorted(item["Key"][len(key) :] for page in pages for item in page.get("Contents", []))


def read_bytes(uri: str | Path) -> tuple[bytes, dict[str, str]]:
    """The content of a file or object and its metadata (empty for local files)."""
    if not is_s3(uri):
        try:
            return _local(uri).read_bytes(), {}
        except OSError as exc:
            raise StorageError(f"{uri}: could not read: {exc}") from exc
    bucket, key = split_s3(uri)
    buffer = io.BytesIO()
    with _s3_call(uri, "download"):
        client = _client()
        metadata = client.head_object(Bucket=bucket, Key=key).get("Metadata") or {}
        client.download_fileobj(bucket, key, buffer)  # s3transfer also retries a body cut off mid-way
        return buffer.getvalue(), dict(metadata)


def _network_errors() -> tuple[type[Exception], ...]:
    """What a dropped, reset or stalled connection raises while a body streams (botocore wraps urllib3's)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError
    from urllib3.exceptions import HTTPError

    return (HTTPClientError, BotoConnectionError, IncompleteReadError, HTTPError, OSError)


class ObjectStream(io.RawIOBase):
    """An S3 object read front to back that survives a dropped connection: the read goes on with a
    `Range: bytes=<reached>-` GET of the same version (IfMatch its ETag), at most `max_attempts() - 1` times
    per object, `RESUME_BACKOFF_S` doubling between tries. A network failure beyond that is a StorageError
    naming the object, never a short read the caller would take for a corrupt file."""

    def __init__(self, uri: str, label: str = "") -> None:
        super().__init__()
        self.uri, self.label = uri, uri if label in ("", uri) else f"{label} ({uri})"
        self._bucket, self._key = split_s3(uri)
        self._client, self._pos, self._resumes = _client(), 0, 0
        self._etag = ""
        self._body = self._get()

    def _get(self) -> Any:
        ranged = {"Range": f"bytes={self._pos}-", "IfMatch": self._etag} if self._pos else {}
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key, **ranged)
        except _s3_errors() as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise StorageError(f"{self.label}: the object was replaced while it was being read (at byte "
                                   f"{self._pos}); read it again") from exc
            raise _error(self.label, "read", exc) from exc
        if self._pos and not str(response.get("ContentRange", "")).startswith(f"bytes {self._pos}-"):
            response["Body"].close()  # a server that ignores Range would send the start again, not the rest
            raise StorageError(f"{self.label}: the endpoint ignored the Range of a resumed read (Content-Range "
                               f"{response.get('ContentRange')!r}); read it again over a steadier connection")
        self._etag = self._etag or response.get("ETag", "")
        return response["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                chunk = self._body.read(len(buffer))
                break
            except _network_errors() as exc:
                if self._resumes >= max_attempts() - 1:
                    raise StorageError(
                        f"{self.label}: the connection failed at byte {self._pos} and {self._resumes} resumed "
                        f"read(s) failed too ({type(exc).__name__}: {exc}). The object is not at fault: check the "
                        f"network and the endpoint ({endpoint_url() or 'AWS default'}), then run again") from exc
                self._body.close()
                time.sleep(RESUME_BACKOFF_S * 2 ** self._resumes)
                self._resumes += 1
                self._body = self._get()
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()

    def __repr__(self) -> str:
        return self.label


def sizes(folder: str | Path) -> dict[str, int]:
    """Size of every file under `folder`, by path relative to it ("/"-separated); {} when absent."""
    if not is_s3(folder):
        path = _local(folder)
        return {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}
    bucket, prefix = split_folder(folder)
    with _s3_call(folder, "list"):
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"][len(prefix):]: int(item["Size"]) for page in pages for item in page.get("Contents", [])}


def delete_folder(folder: str | Path) -> int:
    """Remove a folder (everything under an s3:// prefix) and return how many files went; absent is 0."""
    if str(folder).strip() in ("", ".", FILE_SCHEME):
        raise StorageError(f"{folder!r}: no folder named; refusing to delete the working directory")
    if not is_s3(folder):
        path = _local(folder)
        if not path.is_dir():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise StorageError(f"{folder}: could not delete: {exc}") from exc
        return count
    bucket, prefix = split_folder(folder)
    if not prefix:
        raise StorageError(f"{folder}: refusing to delete a whole bucket; give a folder inside it")
    count = 0
    with _s3_call(folder, "delete"):
        client = _client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:  # a page holds at most 1,000 keys, as many as one delete_objects takes
                failed = client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True}).get("Errors")
                if failed:
                    raise StorageError(f"{folder}: could not delete {len(failed)} object(s), e.g. "
                                       f"{failed[0].get('Key')}: {failed[0].get('Message')}. {_hint()}")
                count += len(keys)
    return count


def delete(uri: str | Path) -> None:
    """Remove a file or object; one that is already gone is not an error."""
    if not is_s3(uri):
        try:
            _local(uri).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"{uri}: could not delete: {exc}") from exc
        return
    bucket, key = split_s3(uri)
    with _s3_call(uri, "delete", ignore=_MISSING_CODES):
        _client().delete_object(Bucket=bucket, Key=key)
