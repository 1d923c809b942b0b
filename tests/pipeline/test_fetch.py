"""The fetch step: the working copy locally, a git revision plus a DVC remote on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from headstart.data import git_refs
from headstart.errors import DataError, StorageError
from headstart.steps import fetch
from tests.conftest import make_imagefolder
from tests.helpers import params_cfg, repo_params

DVC = str(Path(sys.executable).parent / "dvc")


def test_working_copy_is_linked_not_symlinked(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "test": 1})
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    out = tmp_path / "out" / "dataset"
    result = fetch.run(params_cfg("fetch", path=str(data)), out)
    assert result.files == 9 and result.md5 == "abc.dir" and result.rev is None
    assert not out.is_symlink()
    first = next(out.rglob("*.png"))
    assert first.stat().st_ino == (data / first.relative_to(out)).stat().st_ino


def test_missing_working_copy_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="make data"):
        fetch.run(params_cfg("fetch", path=str(tmp_path / "nope")), tmp_path / "out")


def test_refuses_to_overwrite_data(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 1})
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    with pytest.raises(StorageError, match="not empty"):
        fetch.run(params_cfg("fetch", path=str(data)), out)


def test_config_defaults_to_the_data_dir_of_params():
    params = repo_params()
    params["data"]["dir"] = "elsewhere"
    assert fetch.config_from_params(params).path == "elsewhere"
    params["fetch"].update(repo="r", path="d")
    assert fetch.config_from_params(params).path == "d"


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> tuple[Path, Path, str]:
    """A git repo whose data.dvc pins a tiny dataset pushed to a DVC remote (a folder); no local cache."""
    root = tmp_path_factory.mktemp("dvc")
    repo, remote = root / "repo", root / "remote"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }

    def sh(*cmd: str) -> str:
        return subprocess.run(
            cmd, cwd=repo, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    sh("git", "init", "-q")
    sh(DVC, "init", "-q")
    make_imagefolder(repo / "data", per_class={"train": 2, "val": 1, "test": 1})
    sh(DVC, "add", "-q", "data")
    sh(DVC, "remote", "add", "-q", "-d", "store", str(remote))
    sh(DVC, "push", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "pin the dataset")
    rev = sh("git", "rev-parse", "HEAD")
    subprocess.run(["rm", "-rf", str(repo / ".dvc" / "cache"), str(repo / "data")], check=True)
    return repo, remote, rev


def test_fetches_the_pinned_version_from_the_remote(dvc_repo, tmp_path):
    repo, remote, rev = dvc_repo
    moved = tmp_path / "moved-remote"
    remote.rename(moved)  # the repository's own remote URL is now wrong: the given one must win
    try:
        result = fetch.run(params_cfg("fetch", repo=str(repo), rev=rev, remote=str(moved)), tmp_path / "ds")
    finally:
        moved.rename(remote)
    assert result.rev == rev and result.files == 12 and result.md5 and result.md5.endswith(".dir")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["test", "train", "val"]


def test_unknown_revision_and_empty_remote_are_user_errors(dvc_repo, tmp_path):
    repo, _, rev = dvc_repo
    with pytest.raises(DataError, match="revision"):
        fetch.run(params_cfg("fetch", repo=str(repo), rev="no-such-tag"), tmp_path / "a")
    with pytest.raises(StorageError, match="DVC remote"):
        fetch.run(params_cfg("fetch", repo=str(repo), rev=rev, remote=str(tmp_path / "empty")), tmp_path / "b")
    assert not (tmp_path / "b").exists()


# --- item 14: a branch is resolved to its commit each run, so the cached fetch sees new data -------


@pytest.fixture
def git_repo(tmp_path) -> tuple[Path, Callable[..., str]]:
    """A repository with a branch `main`, an annotated tag v1 and a lightweight tag `light` on its first commit."""
    repo = tmp_path / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    repo.mkdir()
    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "first dataset version")
    git("tag", "-a", "v1", "-m", "release 1")
    git("tag", "light")
    return repo, git


def test_resolve_rev_follows_a_branch_to_its_newest_commit(git_repo):
    repo, git = git_repo
    first = git("rev-parse", "HEAD")
    assert git_refs.resolve_rev(str(repo), "main") == first
    git("commit", "-q", "--allow-empty", "-m", "new data")
    second = git("rev-parse", "HEAD")
    assert second != first
    assert git_refs.resolve_rev(str(repo), "main") == second  # the cache key moves with the branch
    assert git_refs.resolve_rev(str(repo), "") == second  # the default branch
    assert git_refs.resolve_rev(f"file://{repo}", "refs/heads/main") == second


def test_tags_and_commits_pass_through_as_commits(git_repo):
    repo, git = git_repo
    first = git("rev-parse", "HEAD")
    assert git_refs.resolve_rev(str(repo), "v1") == first  # an annotated tag: its commit, not the tag object
    assert git_refs.resolve_rev(str(repo), "light") == first
    assert git_refs.resolve_rev(str(repo), first) == first
    assert git_refs.resolve_rev(str(repo), first.upper()) == first
    assert git_refs.resolve_rev(str(repo), first[:10]) == first[:10]  # an abbreviation: fetch checks it
    assert git_refs.resolve_rev("", "main") == "main"  # the working copy: nothing to resolve


def test_bad_rev_or_repo_names_the_run_parameter(git_repo, tmp_path):
    repo, _ = git_repo
    with pytest.raises(DataError, match=r"data_rev='no-such-branch'.*\(data_repo\) has no branch or tag"):
        git_refs.resolve_rev(str(repo), "no-such-branch")
    with pytest.raises(StorageError, match=r"data_repo=.*could not list its branches and tags"):
        git_refs.resolve_rev(str(tmp_path / "not-a-repo"), "main")


def test_a_pinned_listing_with_a_name_that_leaves_the_folder_is_refused_and_writes_nothing(dvc_repo, tmp_path):
    """A .dir listing is data: whoever can push and commit may put '../../x.png' in it."""
    import hashlib
    import json
    import shutil

    source, remote, _ = dvc_repo
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)  # the module's repository stays as it was
    pin = (repo / "data.dvc").read_text()
    md5 = next(line.split(":", 1)[1].strip() for line in pin.splitlines() if "md5:" in line)
    listing = json.loads((remote / "files" / "md5" / md5[:2] / md5[2:]).read_text())
    listing[0]["relpath"] = "../../escaped.png"
    raw = json.dumps(listing).encode()
    crafted = hashlib.md5(raw).hexdigest() + ".dir"
    store = tmp_path / "remote"
    shutil.copytree(remote, store)
    (store / "files" / "md5" / crafted[:2]).mkdir(exist_ok=True)
    (store / "files" / "md5" / crafted[:2] / crafted[2:]).write_bytes(raw)
    (repo / "data.dvc").write_text(pin.replace(md5, crafted))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "crafted"], env=env, check=True)
    rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    out = tmp_path / "fetched" / "ds"
    with pytest.raises(DataError, match=r"data/\.\. in the pinned listing leaves the dataset folder"):
        fetch.run(params_cfg("fetch", repo=str(repo), rev=rev, remote=str(store)), out)
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("escaped.png")]
