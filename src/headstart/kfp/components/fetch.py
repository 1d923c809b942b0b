"""KFP components: resolve the data revision to a commit, then materialise the dataset version it pins as a
Dataset artifact (headstart.steps.fetch)."""

from kfp.dsl import Dataset, Output


def resolve_data_rev(data_repo: str, data_rev: str) -> str:
    """The commit `data_rev` names in `data_repo` now. Never cached: its output is fetch's cache key."""
    from headstart.kfp import bodies

    return bodies.resolve_data_rev(data_repo=data_repo, data_rev=data_rev)


def fetch_data(data_repo: str, data_rev: str, dvc_remote: str, params_json: str, dataset: Output[Dataset]):
    """Download the DVC-tracked dataset pinned by data.dvc at `data_rev`; the working copy when no repo."""
    from headstart.kfp import bodies

    bodies.fetch_data(
        data_repo=data_repo, data_rev=data_rev, dvc_remote=dvc_remote, params_json=params_json, dataset=dataset,
    )
