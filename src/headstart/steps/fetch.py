"""Materialise the pinned dataset version as a folder: the first step of the Kubeflow pipeline.

A dataset version is a git revision of this project (its `data.dvc` pins the content hash) plus
the DVC remote that holds the files. With no repository given, the step reads the working copy,
which is what `kfp.local` runs and `make run` use.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from headstart.config import Frozen, from_section, section
from headstart.data.names import unsafe_path_reason
from headstart.data.pin import parse_pin, pinned_md5
from headstart.errors import DataError, StorageError

REMOTE_NAME = "headstart-pipeline"


class FetchConfig(Frozen):
    """Where the dataset version comes from: the `fetch` section of params.yaml (no defaults here)."""

    repo: str  # git URL (or path) of the project; "" = the working copy
    rev: str  # commit, tag or branch whose data.dvc pins the data; "" = the default branch
    remote: str  # DVC remote URL, e.g. s3://bucket/dvcstore; "" = the remote the repo configures
    path: str  # the DVC-tracked folder, relative to the repository root: `data.dir` unless fetch sets it
    link: bool  # working copy only: hard-link the files (no copy) where the filesystem allows
    jobs: int | None = Field(ge=1)  # parallel downloads; None = DVC's default


def config_from_params(params: dict[str, Any], **changes: Any) -> FetchConfig:
    """The `fetch` section, its `path` from `data.dir` where it sets none; `changes` apply last."""
    data_dir = section(params, "data").get("dir")
    path = {"path": data_dir} if data_dir is not None and "path" not in section(params, "fetch") else {}
    return from_section(FetchConfig, params, "fetch", **{**path, **changes})


@dataclass
class FetchResult:
    data_dir: str
    source: str
    rev: str | None
    md5: str | None
    files: int


def _clear(out_dir: Path) -> None:
    """Accept a missing or empty destination; refuse to overwrite data."""
    if out_dir.is_symlink():
        out_dir.unlink()
    elif out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    elif out_dir.exists():
        raise StorageError(f"{out_dir}: already exists and is not empty; choose an empty output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link shares the bytes without the symlink a validation check would reject."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _from_working_copy(cfg: FetchConfig, out_dir: Path) -> tuple[str, str | None, str | None]:
    """(source, rev, md5) of what was copied to `out_dir`, as are _from_repo's."""
    source = Path(cfg.path)
    if not source.is_dir():
        raise DataError(
            f"{source.resolve()}: dataset folder not found; run `make data` (or `dvc pull`) first, "
            "or give the git repository and revision to fetch from (fetch.repo and fetch.rev; in the "
            "pipeline, the run parameters data_repo and data_rev)"
        )
    md5 = pinned_md5(source)
    shutil.copytree(source, out_dir, copy_function=_link_or_copy if cfg.link else shutil.copy2)
    return str(source.resolve()), None, md5


def _check_names(fs: Any, path: str, where: str) -> None:
    """The pinned listing is data whoever may push wrote: a name in it that would leave the dataset folder is
    refused before anything is written (DVC's own copy recursed without end on '../..')."""
    prefix, folders = path.rstrip("/") + "/", [path]
    while folders:  # breadth first, by hand: fsspec's own walk recursed into '..' without end
        for entry in fs.ls(folders.pop(), detail=True):
            relpath = entry["name"].removeprefix(prefix)
            if reason := unsafe_path_reason(relpath):
                raise DataError(f"{where}: {path}/{relpath} in the pinned listing leaves the dataset folder "
                                f"({reason}); the .dir object on the remote is corrupt or crafted")
            if entry["type"] == "directory":
                folders.append(entry["name"])


def _from_repo(cfg: FetchConfig, out_dir: Path) -> tuple[str, str | None, str | None]:
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc_data.index.index import DataIndexError
    from scmrepo.exceptions import SCMError

    where = f"{cfg.repo}@{cfg.rev or 'default branch'}"
    # a given remote URL is made the default under a name of its own, so it wins over the repository's
    config = {"core": {"remote": REMOTE_NAME}, "remote": {REMOTE_NAME: {"url": cfg.remote}}} if cfg.remote else None
    try:
        fs = DVCFileSystem(cfg.repo, rev=cfg.rev or None, config=config)
        pin = f"{cfg.path}.dvc"
        if not fs.exists(pin):
            raise DataError(f"{where}: no {pin} at this revision; check that the revision exists and "
                            f"pins the dataset with {pin}")
        md5 = parse_pin(fs.read_text(pin), f"{where}:{pin}")
        _check_names(fs, cfg.path, where)
        fs.get(cfg.path, str(out_dir), recursive=True, **({"batch_size": cfg.jobs} if cfg.jobs else {}))
        rev = fs.repo.get_rev()
    except (DvcException, DataIndexError, SCMError, OSError) as exc:  # DataIndexError: the listing's .dir
        shutil.rmtree(out_dir, ignore_errors=True)                       # object is on no remote (or cache)
        remote = cfg.remote or "the remote configured in the repository"
        raise StorageError(
            f"{where}: could not fetch {cfg.path!r} from {remote}: {exc}. Check the repository URL, the "
            "revision, the DVC remote URL and its credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL)"
        ) from exc
    return cfg.repo, rev, md5


def run(cfg: FetchConfig, out_dir: Path) -> FetchResult:
    """Write the dataset version to `out_dir` (<split>/<class>/<image>) and say where it came from."""
    _clear(out_dir)
    source, rev, md5 = _from_repo(cfg, out_dir) if cfg.repo else _from_working_copy(cfg, out_dir)
    return FetchResult(data_dir=str(out_dir), source=source, rev=rev, md5=md5,
                       files=sum(1 for p in out_dir.rglob("*") if p.is_file()))
