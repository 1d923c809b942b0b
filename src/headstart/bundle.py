"""A folder as one .tar.gz at an s3:// URI (or a path): how a multi-node training job gets its dataset
and hands its outputs back, since its pods share no disk with the pipeline step that launched it.

`python -m headstart.bundle put FOLDER URI` / `get URI FOLDER` are the commands the job's pods run.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) == 3 and args[0] == "put":
            put(Path(args[1]), args[2])
        elif len(args) == 3 and args[0] == "get":
            get(args[1], Path(args[2]))
        else:
            print("usage: python -m headstart.bundle put FOLDER URI | get URI FOLDER", file=sys.stderr)
            return 2
    except HeadstartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
