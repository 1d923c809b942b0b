"""A folder as one .tar.gz at an s3:// URI (or a path): how a multi-node training job gets its dataset
and hands its outputs back, since its pods share no disk with the pipeline step that launched it.

A packed dataset (headstart.data.shards) is already in its staging form: `put_folder` / `get_folder` copy
its files as they are, many at a time through one s3transfer manager, instead of gzipping hundreds of
GB on one core into one archive and unpacking it again in every pod.

`python -m headstart.cluster.bundle put FOLDER URI` / `get URI FOLDER` / `get-folder URI FOLDER` are the commands
the job's pods run.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from headstart import storage
from headstart.errors import HeadstartError, StorageError


def pack(folder: Path, archive: Path) -> Path:
    if not folder.is_dir():
        raise StorageError(f"{folder}: no such folder to pack")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    return archive


def unpack(archive: Path, dest: Path) -> Path:
    """Extract with the `data` filter: no absolute paths, no links out of `dest`, no devices."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise StorageError(f"{archive}: not a readable .tar.gz bundle ({exc})") from exc
    return dest


def put(folder: Path, uri: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage.upload(pack(folder, Path(tmp) / "bundle.tar.gz"), uri)


def get(uri: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        return unpack(storage.fetch(uri, Path(tmp)), dest)


def _concurrency() -> int:
    from headstart import runtime

    return max(4, min(32, 4 * runtime.cpu_count()))  # S3 transfers wait on the network, not the CPU


def _transfer_manager(client: Any) -> Any:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    return create_transfer_manager(client, TransferConfig(max_concurrency=_concurrency()))


def put_folder(folder: Path, uri: str) -> int:
    """Copy every file under `folder` to the folder `uri` (s3:// or a path), relative paths kept; returns
    how many. Files go up concurrently, large ones in multipart chunks; an object is whole or absent."""
    if not folder.is_dir():
        raise StorageError(f"{folder}: no such folder to stage")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not storage.is_s3(uri):
        dest = Path(uri)

        def copy(path: Path) -> None:
            (dest / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / path.relative_to(folder))

        with ThreadPoolExecutor(_concurrency()) as pool:
            list(pool.map(copy, files))
        return len(files)
    bucket, prefix = storage.split_folder(uri)
    try:
        with _transfer_manager(storage._client()) as manager:  # noqa: SLF001 - one shared, thread-safe client
            futures = [manager.upload(str(p), bucket, prefix + p.relative_to(folder).as_posix()) for p in files]
            for future in futures:
                future.result()
    except storage._s3_errors() as exc:  # noqa: SLF001
        raise storage._error(uri, f"upload {folder}", exc) from exc  # noqa: SLF001
    return len(files)


def _inside(dest: Path, rel: str, source: str) -> Path:
    """`dest / rel`, refused unless it resolves inside `dest` (an object key holding '..', or a leading '/')."""
    target = (dest / rel).resolve()
    if not target.is_relative_to(dest.resolve()) or target == dest.resolve():
        raise StorageError(f"{source}: its key would be written to {target}, outside {dest}; nothing was "
                           "downloaded. Remove that object from the staged folder, or stage the folder again")
    return target


def get_folder(uri: str, dest: Path) -> Path:
    """Copy the folder `uri` (s3:// or a path) to `dest`, every object under its prefix, concurrently."""
    if not storage.is_s3(uri):
        src = Path(uri)
        if not src.is_dir():
            raise StorageError(f"{uri}: no such staged folder")
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return dest
    bucket, prefix = storage.split_folder(uri)
    try:
        client = storage._client()  # noqa: SLF001
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                                          Prefix=prefix)
                for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        if not keys:
            raise StorageError(f"{uri}: nothing staged there (no objects under the prefix)")
        targets = {key: _inside(dest, key[len(prefix):], f"s3://{bucket}/{key}") for key in keys}
        for target in targets.values():
            target.parent.mkdir(parents=True, exist_ok=True)
        with _transfer_manager(client) as manager:
            futures = [manager.download(bucket, key, str(target)) for key, target in targets.items()]
            for future in futures:
                future.result()
    except storage._s3_errors() as exc:  # noqa: SLF001
        raise storage._error(uri, "download", exc) from exc  # noqa: SLF001
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = {"put": lambda folder, uri: put(Path(folder), uri), "get": lambda uri, dest: get(uri, Path(dest)),
                "get-folder": lambda uri, dest: get_folder(uri, Path(dest))}
    if len(args) != 3 or args[0] not in commands:
        print("usage: python -m headstart.cluster.bundle put FOLDER URI | get URI FOLDER | get-folder URI FOLDER",
              file=sys.stderr)
        return 2
    try:
        commands[args[0]](*args[1:])
    except HeadstartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
