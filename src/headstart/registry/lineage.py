"""Where a registered version came from: the data version, the code version and the training runs, as the
tags on the MLflow model version that point back at them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from headstart.tracking import git_head


def lineage(data_dir: Path) -> dict[str, str]:
    """data.dvc md5 and git commit, so a registered version points back at code and data."""
    from headstart.data.pin import pinned_md5

    md5 = pinned_md5(data_dir)
    return {**({"data.dvc_md5": md5} if md5 else {}),
            "git.commit": os.environ.get("HEADSTART_GIT_COMMIT") or git_head() or "unknown"}


def lineage_from_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """The data version the KFP fetch task resolved (its Dataset's metadata): a pod has neither git nor data.dvc."""
    tags = {"data.dvc_md5": str(metadata["md5"])} if metadata.get("md5") else {}
    if metadata.get("rev"):
        tags.update({"git.commit": str(metadata["rev"]), "data.source": str(metadata.get("source", ""))})
    return tags


def data_only(tags: dict[str, str]) -> dict[str, str]:
    """The tags that name the data (data.dvc_md5, data.source), for the logged model's dataset input."""
    return {k: v for k, v in tags.items() if k.startswith("data")}


def version_tags(data_tags: dict[str, str], winner: str, run_ids: dict[str, str | None], pretraining_paid: bool,
                 models: dict[str, dict[str, Any]], arch: str, image_size: int) -> dict[str, str]:
    """The registered version's tags: data and code version, the winner, both training runs, each evaluated
    model's test accuracy and macro-F1 (as text: the registry keeps no metrics on a version), arch and size."""
    return {**data_tags, "headstart.winner": winner,
            **{f"headstart.{role}_run_id": run_id or "" for role, run_id in run_ids.items()},
            "headstart.pretraining_paid": str(pretraining_paid),
            **{f"metric.{k}.{m}": f"{v[m]:.4f}" for k, v in models.items() for m in ("accuracy", "macro_f1")},
            "params.arch": arch, "params.image_size": str(image_size)}
