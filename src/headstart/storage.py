"""Read and write local paths and s3:// URIs, so steps accept either without caring which.

The S3 client is built on first use (never at import time) and honours `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`, so the same code talks to AWS, MinIO or a moto server on loopback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from headstart.errors import StorageError

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def is_s3(uri: str | Path) -> bool:
    """True for `s3://bucket/key` strings; a Path is always local."""
    return isinstance(uri, str) and uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b.pt` -> ("bucket", "a/b.pt")."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise StorageError(f"{uri}: not an object URI; write it as s3://<bucket>/<path/to/file>")
    return bucket, key


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment, None for AWS itself."""
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _client() -> Any:
    """A fresh boto3 S3 client; built per call so changed env vars (tests, CLI) take effect."""
    import boto3  # imported lazily: slow to import and only s3:// URIs need it
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        region = boto3.session.Session().region_name or "us-east-1"
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url(),
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )
    except BotoCoreError as exc:
        raise StorageError(f"could not create an S3 client: {exc}. {_hint()}") from exc


def _hint() -> str:
    return (
        "Check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE), the endpoint "
        f"(AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; now {endpoint_url() or 'AWS default'}) "
        "and that the bucket exists and you may access it."
    )


def _code(exc: BaseException | None) -> str:
    """The S3 error code, also when boto3 wraps the ClientError (S3UploadFailedError)."""
    while exc is not None:
        if code := getattr(exc, "response", {}).get("Error", {}).get("Code"):
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


def _local(uri: str | Path) -> Path:
    text = str(uri)
    return Path(text[len(FILE_SCHEME) :] if text.startswith(FILE_SCHEME) else text).expanduser()


def fetch(uri: str | Path, dest_dir: Path) -> Path:
    """Return a local path for `uri`: local files as they are, s3 objects downloaded into dest_dir."""
    if not is_s3(uri):
        path = _local(uri)
        if not path.exists():
            raise StorageError(
                f"{uri}: no such file or directory (relative to {Path.cwd()}); check the path."
            )
        return path
    uri = str(uri)
    bucket, key = split_s3(uri)
    dest = Path(dest_dir) / PurePosixPath(key).name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _client().download_file(bucket, key, str(dest))
    except _s3_errors() as exc:
        raise _error(uri, "download", exc) from exc
    return dest


def upload(path: Path, uri: str | Path) -> None:
    """Copy a local file to `uri` (an s3:// object or another local path)."""
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
    uri = str(uri)
    bucket, key = split_s3(uri)
    try:
        _client().upload_file(str(path), bucket, key)
    except _s3_errors() as exc:
        raise _error(uri, f"upload {path}", exc) from exc


def exists(uri: str | Path) -> bool:
    """Whether the file or s3 object exists; errors other than 'not found' raise StorageError."""
    if not is_s3(uri):
        return _local(uri).exists()
    uri = str(uri)
    bucket, key = split_s3(uri)
    try:
        _client().head_object(Bucket=bucket, Key=key)
    except _s3_errors() as exc:
        if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise _error(uri, "check", exc) from exc
    return True
