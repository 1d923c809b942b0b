"""Start runs and schedules on a Kubeflow Pipelines API with the real kfp.Client."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError
from headstart.kfp.spec import DEFAULT_PACKAGE, check_arguments, root_inputs

SERVICE_ACCOUNT = "headstart-pipeline"
EXPERIMENT = "headstart"


@dataclass
class Submitted:
    experiment_id: str
    run_id: str | None = None
    recurring_run_id: str | None = None


def _client(host: str, namespace: str | None, token: str | None) -> Any:
    import kfp

    if not host.startswith(("http://", "https://")):
        raise ConfigError(
            f"--host {host!r}: give the KFP API URL with its scheme, e.g. http://localhost:8080"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
        except Exception as exc:  # noqa: BLE001 - kfp raises bare exceptions and urllib3 errors alike
            raise _unreachable(host, exc) from exc


def _unreachable(host: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"--host {host}: the Kubeflow Pipelines API did not answer ({type(exc).__name__}: "
        f"{str(exc)[:300]}). Check the URL (port-forward: kubectl -n kubeflow port-forward "
        "svc/ml-pipeline-ui 8080:80) and, for an authenticated cluster, --token"
    )


def check_cluster_run(package: Path, arguments: dict[str, Any], *, scheduled: bool = False) -> None:
    """Refuse, before any request, a run that can only fail on the cluster: a multi-node run without an
    s3:// staging_uri, and a schedule without data_repo (an empty one means the working copy, which the
    pipeline's pods do not have, so every scheduled run would fail at fetch)."""
    from headstart.cluster.pytorchjob import check_staging_uri

    values = {**root_inputs(package), **arguments}
    if scheduled and not values.get("data_repo"):
        raise ConfigError(
            "data_repo is empty: a scheduled run fetches its dataset from a git repository (an empty data_repo "
            "means the working copy, which the pipeline's pods do not have). Add --arg data_repo=<git URL of "
            "this repository>, e.g. --arg data_repo=https://github.com/acme/headstart.git --arg data_rev=main"
        )
    try:
        multi_node = int(values.get("distributed_nodes") or 0) > 1
    except (TypeError, ValueError):
        multi_node = False  # not a number: KFP itself refuses it, naming the parameter
    if multi_node:
        check_staging_uri(str(values.get("staging_uri") or ""))


def _create(
    host: str, package: Path, arguments: dict[str, Any], experiment: str, namespace: str | None,
    token: str | None, create: Callable[[Any, str], Any], *, scheduled: bool = False,
) -> tuple[str, Any]:
    """Check the run (`check_cluster_run`) and its arguments against the package, connect, find or make the
    experiment, then `create(client, experiment_id)`; an API that does not answer becomes a ConfigError naming
    --host."""
    check_cluster_run(package, arguments, scheduled=scheduled)
    check_arguments(package, arguments)
    client = _client(host, namespace, token)
    try:
        exp = str(client.create_experiment(name=experiment, namespace=namespace).experiment_id)
        return exp, create(client, exp)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _unreachable(host, exc) from exc


def submit(
    host: str, package: Path = DEFAULT_PACKAGE, *, arguments: dict[str, Any] | None = None,
    run_name: str | None = None, experiment: str = EXPERIMENT, namespace: str | None = None,
    service_account: str = SERVICE_ACCOUNT, enable_caching: bool | None = None, token: str | None = None,
) -> Submitted:
    """Create one run of the compiled package."""
    arguments = arguments or {}
    exp, run = _create(host, package, arguments, experiment, namespace, token, lambda client, exp: (
        client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name or f"headstart {package.stem}",
            experiment_id=exp,
            namespace=namespace,
            enable_caching=enable_caching,
            service_account=service_account or None,
        )))
    return Submitted(experiment_id=exp, run_id=str(run.run_id))


def check_cron(cron: str) -> str:
    """KFP takes six fields, seconds first (robfig/cron): `0 0 3 * * *` is every day at 03:00."""
    fields = cron.split()
    if len(fields) == 5:
        raise ConfigError(
            f"--cron {cron!r}: Kubeflow Pipelines wants six fields, seconds first; "
            f"for this schedule use --cron '0 {cron}'"
        )
    if len(fields) != 6 and not cron.startswith("@"):
        raise ConfigError(
            f"--cron {cron!r}: expected six fields (second minute hour day month weekday), "
            "e.g. '0 0 3 * * *' for every day at 03:00"
        )
    return " ".join(fields)


def schedule(
    host: str, cron: str, package: Path = DEFAULT_PACKAGE, *, name: str = "headstart-retraining",
    arguments: dict[str, Any] | None = None, experiment: str = EXPERIMENT, namespace: str | None = None,
    service_account: str = SERVICE_ACCOUNT, enable_caching: bool | None = None, token: str | None = None,
) -> Submitted:
    """A recurring run: one at a time (max concurrency 1), no catch-up of missed slots."""
    cron = check_cron(cron)
    arguments = arguments or {}
    exp, job = _create(host, package, arguments, experiment, namespace, token, lambda client, exp: (
        client.create_recurring_run(
            experiment_id=exp,
            job_name=name,
            description="Scheduled Headstart retraining",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=arguments,
            pipeline_package_path=str(package),
            enabled=True,
            enable_caching=enable_caching,
            service_account=service_account or None,
        )), scheduled=True)
    return Submitted(experiment_id=exp, recurring_run_id=str(job.recurring_run_id))
