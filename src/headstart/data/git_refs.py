"""Which commit a data revision names now: the Kubeflow pipeline resolves the branch, tag or commit it is given
before fetching, so fetch's cache key is the data version itself."""

from __future__ import annotations

import re
from pathlib import Path

from headstart.errors import DataError, StorageError

_HEX = re.compile(r"[0-9a-fA-F]{4,40}")


def _remote_refs(repo: str) -> dict[str, str]:
    """`git ls-remote` without git (the component image has none): dulwich, which DVC's scmrepo uses."""
    from dulwich import porcelain

    try:
        refs = porcelain.ls_remote(repo).refs
    except Exception as exc:  # noqa: BLE001 - dulwich raises many kinds: unreachable, auth, not a repo
        raise StorageError(
            f"data_repo={repo!r}: could not list its branches and tags ({type(exc).__name__}: {exc}). Check "
            "the git URL and that the pipeline's pods can reach it"
        ) from exc
    return {name.decode(): sha.decode() for name, sha in refs.items() if sha is not None}


def _peel(repo: str, sha: str) -> str:
    """An annotated tag's commit: a remote over HTTP lists it as `<tag>^{}`, a local repository does not."""
    path = Path(repo.removeprefix("file://"))
    if not path.exists():
        return sha
    from dulwich.objects import Tag
    from dulwich.repo import Repo

    with Repo(str(path)) as git:
        obj = git[sha.encode()]
        while isinstance(obj, Tag):
            obj = git[obj.object[1]]
        return obj.id.decode()


def resolve_rev(repo: str, rev: str) -> str:
    """The commit that `rev` (a branch, tag, commit or "" for the default branch) names in `repo` now.

    The pipeline runs this uncached and hands the commit to the cached fetch, so fetch's cache key is
    the data version: a branch that moved on fetches again, an unchanged one reuses the download.
    The working copy (no repo) has nothing to resolve; a full commit sha is returned as it is.
    """
    if not repo or re.fullmatch(r"[0-9a-fA-F]{40}", rev):
        return rev.lower() if repo else rev
    refs = _remote_refs(repo)
    for name in (["HEAD"] if not rev else [rev, f"refs/{rev}", f"refs/tags/{rev}", f"refs/heads/{rev}"]):
        if f"{name}^{{}}" in refs:
            return refs[f"{name}^{{}}"]
        if name in refs:
            return _peel(repo, refs[name])
    if _HEX.fullmatch(rev):
        return rev  # an abbreviated commit: ls-remote lists refs only, so fetch checks that it exists
    raise DataError(
        f"data_rev={rev!r}: {repo} (data_repo) has no branch or tag of that name; give a branch, a tag or a "
        "commit sha of that repository"
    )
