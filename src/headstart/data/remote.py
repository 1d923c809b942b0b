"""A packed dataset version read straight from its DVC remote, without `dvc pull`.

A DVC remote stores files by content hash, not by path: `dvc add shards` records the folder as one
`<md5>.dir` object, a JSON list of `{"md5", "relpath"}` for its files, and `dvc push` uploads it and every
file under `<remote>/files/md5/<first 2 hex>/<rest>` (DVC 3; DVC 2's `.dvc` files, without `hash: md5`,
used `<remote>/<2 hex>/<rest>`). `open_remote` reads the `.dvc` file of a packed folder in a repository
checkout, the repository's default remote from `.dvc/config` (and `config.local`), and that one listing
object, and returns a `RemoteRoot`: a mapping from each relative path (`index.json`,
`train/train-000000.tar`, ...) to its object's URL, which `headstart.data.shards` reads like a folder,
streaming each shard from S3 as it goes. Nothing is downloaded whole and the working copy is not touched.

Credentials and the endpoint come from the environment, as for every other S3 read in Headstart
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from headstart import storage
from headstart.data.pin import parse_pin, pin_file
from headstart.errors import ConfigError, DataError, StorageError

INDEX = "index.json"  # headstart.data.shards.INDEX (not imported: shards imports this module)


@dataclass(frozen=True)
class RemoteRoot:
    """A packed dataset whose files are objects on a DVC remote: relative path -> object URL.

    `label` names it in messages (`<path>.dvc@<remote>`), so an error still names the shard's path."""

    label: str
    objects: dict[str, str] = field(repr=False)

    def url(self, rel: str) -> str:
        """The object holding `rel`; FileNotFoundError when the pushed version has no such file."""
        try:
            return self.objects[rel]
        except KeyError:
            raise FileNotFoundError(f"{self.label}/{rel}: not in the DVC-tracked folder") from None

    def __str__(self) -> str:
        return self.label


_MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")


def object_url(remote: str, md5: str, dvc3: bool = True) -> str:
    """Where DVC keeps the object of hash `md5` (a `.dir` listing keeps its suffix). The hash comes from a
    listing anyone who can push may write, so it must be one: '../..' would name any file or key."""
    if not _MD5.fullmatch(md5):
        raise DataError(f"{md5!r}: not a DVC md5 (32 hex digits, '.dir' for a folder listing); the .dvc file or "
                        "the folder listing on the remote is corrupt or crafted")
    parts = ("files", "md5", md5[:2], md5[2:]) if dvc3 else (md5[:2], md5[2:])
    return storage.join(remote, *parts) if storage.is_s3(remote) else str(Path(remote).joinpath(*parts))


def open_remote(data: Path, remote: str = "") -> RemoteRoot:
    """The packed folder `data` (or its `.dvc` file) of a DVC repository checkout, read from the remote.

    `remote` overrides the URL of the repository's default remote. The folder itself need not exist."""
    dvc_file = data if data.suffix == ".dvc" else pin_file(data)
    if not dvc_file.is_file():
        raise DataError(f"{dvc_file}: not found; reading {data} from its DVC remote needs the .dvc file that "
                        f"`dvc add {data}` wrote (check out the repository at the revision you want)")
    text = dvc_file.read_text(encoding="utf-8")
    parse_pin(text, str(dvc_file))  # the same DataError as every other step for a broken .dvc file
    out = dict(yaml.safe_load(text)["outs"][0])
    md5 = out.get("md5") or ""
    if not md5.endswith(".dir"):
        raise DataError(f"{dvc_file}: tracks a file ({md5 or 'no md5'}), not a folder; the remote read takes "
                        "a packed dataset folder (headstart data pack, then dvc add)")
    url = remote or remote_url(_repo_root(dvc_file))
    dvc3 = out.get("hash") == "md5"
    listing_url = object_url(url, md5, dvc3)
    try:
        raw, _ = storage.read_bytes(listing_url)
    except StorageError as exc:
        raise DataError(f"{dvc_file}: the folder listing {listing_url} is not on the remote ({exc}); "
                        f"push it first (dvc push {dvc_file.name})") from exc
    try:
        entries = json.loads(raw.decode("utf-8"))
        objects = {str(e["relpath"]): object_url(url, str(e["md5"]), dvc3) for e in entries}
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, DataError) as exc:
        raise DataError(f"{listing_url}: not a DVC folder listing ({type(exc).__name__}: {exc})") from exc
    label = f"{dvc_file}@{url}"
    if INDEX not in objects:
        raise DataError(f"{label}: the tracked folder has no {INDEX}; it is not a packed dataset "
                        "(headstart data pack --data <ImageFolder> --out <folder>, then dvc add and push it)")
    return RemoteRoot(label=label, objects=objects)


def _repo_root(start: Path) -> Path:
    for folder in [start.resolve().parent, *start.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    raise DataError(f"{start}: not inside a DVC repository (no .dvc/ folder above it); give the remote URL")


def remote_url(repo: Path) -> str:
    """The URL of the repository's default remote, as DVC itself reads it (config, config.local)."""
    from dvc.config import Config
    from dvc.config import ConfigError as DvcConfigError

    try:
        conf = Config(dvc_dir=str(repo / ".dvc"))
    except DvcConfigError as exc:
        raise ConfigError(f"{repo / '.dvc' / 'config'}: unreadable DVC config ({exc})") from exc
    name = conf["core"].get("remote")
    if not name or name not in conf["remote"]:
        raise ConfigError(f"{repo / '.dvc' / 'config'}: no default DVC remote; add one "
                          "(dvc remote add -d <name> s3://bucket/prefix) or give the remote URL")
    settings = conf["remote"][name]
    endpoint = settings.get("endpointurl")
    if endpoint and storage.is_s3(settings["url"]) and not storage.endpoint_url():
        raise ConfigError(f"DVC remote {name!r} uses endpoint {endpoint}; Headstart's S3 reads take the endpoint "
                          f"from the environment: export AWS_ENDPOINT_URL_S3={endpoint}")
    return str(settings["url"])
