"""KFP components: resolve the data revision to a commit, then materialise the dataset version it pins as a
Dataset artifact (headstart.steps.fetch)."""

from kfp import dsl
from kfp.dsl import Dataset, Output
from kfp.dsl.python_component import PythonComponent


def resolve_data_rev(data_repo: str, data_rev: str) -> str:
    """The commit `data_rev` names in `data_repo` now. Never cached: its output is fetch's cache key."""
    from headstart.steps import fetch

    commit = fetch.resolve_rev(data_repo, data_rev)
    print(f"data_rev {data_rev or '(default branch)'} of {data_repo or 'the working copy'}: {commit or '-'}")
    return commit


def fetch_data(data_repo: str, data_rev: str, dvc_remote: str, params_json: str, dataset: Output[Dataset]):
    """Download the DVC-tracked dataset pinned by data.dvc at `data_rev`; the working copy when no repo."""
    import dataclasses
    from pathlib import Path

    from headstart.pipeline import kfp_io
    from headstart.steps import fetch

    p = kfp_io.params(
        params_json, knobs={"fetch.repo": data_repo, "fetch.rev": data_rev, "fetch.remote": dvc_remote}
    )
    result = fetch.run(fetch.config_from_params(p), Path(dataset.path))
    dataset.metadata.update(dataclasses.asdict(result))


def component(image: str) -> PythonComponent:
    return dsl.component(fetch_data, base_image=image, install_kfp_package=False)


def resolve_component(image: str) -> PythonComponent:
    return dsl.component(resolve_data_rev, base_image=image, install_kfp_package=False)
