"""`headstart pipeline ...`: compile, run locally, submit and schedule the Kubeflow pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from headstart.errors import ConfigError
from headstart.kfp.spec import DEFAULT_PACKAGE

app = typer.Typer(
    help="The Kubeflow pipeline: compile the spec, run it locally (kfp.local), submit a run, schedule runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml compiled into the pipeline.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override params.yaml, e.g. --set train.shared.batch_size=32 (repeatable)."
    ),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arg",
        "-a",
        help="A run parameter, e.g. --arg epochs=3 (repeatable; see the compiled spec's inputs).",
    ),
]
PackageOpt = Annotated[Path, typer.Option("--package", help="Compiled pipeline spec.")]
HostOpt = Annotated[
    str, typer.Option("--host", envvar="KFP_HOST", help="KFP API URL, e.g. http://localhost:8080.")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="KFP_TOKEN", help="Bearer token for an authenticated KFP endpoint."),
]
ExperimentOpt = Annotated[str, typer.Option(help="KFP experiment (created if missing).")]
NamespaceOpt = Annotated[str | None, typer.Option(help="Profile namespace (multi-user Kubeflow).")]
AccountOpt = Annotated[str, typer.Option(help="Kubernetes service account of the run's pods.")]
CacheOpt = Annotated[
    bool | None,
    typer.Option(
        "--cache/--no-cache",
        help="Override every task's caching (default: as compiled: fetch, validate, train cached).",
    ),
]


def parse_arguments(items: list[str] | None) -> dict[str, Any]:
    """`name=value` pairs; values read as YAML, so 3 is an int and [a, b] a list."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--arg {item!r}: expected NAME=VALUE, for example --arg epochs=3")
        try:
            out[name.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--arg {item!r}: value is not valid YAML: {exc}") from exc
    return out


@app.command("compile")
def compile_cmd(
    image: Annotated[
        str | None, typer.Option(help="Component image; default <registry>/headstart:<tag>.")
    ] = None,
    gpu_image: Annotated[str | None, typer.Option(help="Training image; default <image>-cuda.")] = None,
    registry: Annotated[str | None, typer.Option(help="Image registry, e.g. ghcr.io/acme.")] = None,
    tag: Annotated[str | None, typer.Option(help="Image tag; default the package version.")] = None,
    workspace: Annotated[
        bool,
        typer.Option(
            help="Give each run a workspace volume so retried training resumes "
            "from checkpoints (KFP 2.14+); --no-workspace for older KFP."
        ),
    ] = True,
    out: Annotated[Path, typer.Option(help="Where to write the spec.")] = DEFAULT_PACKAGE,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Compile the pipeline to YAML (commit pipelines/headstart_pipeline.yaml; upload it in the KFP UI)."""
    from headstart.config import load_params
    from headstart.kfp.spec import compile as compile_spec

    load_params(params, overrides, full=True)  # every section: the pods read them after the GPUs have started
    extra: dict[str, Any] = {"image_registry": registry, "image_tag": tag}
    if not workspace:
        extra["workspace_size"] = ""
    path = compile_spec(image, out, gpu_image=gpu_image, params_file=params, overrides=overrides, **extra)
    console.print(f"[green]compiled[/] {path}")


@app.command("run-local")
def run_local_cmd(
    root: Annotated[
        Path, typer.Option(help="Local pipeline root: each run's task outputs land here.")
    ] = Path("pipelines/local_root"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    args: ArgOpt = None,
    runner: Annotated[
        str,
        typer.Option(
            help="subprocess: every task in this Python environment (quick). docker: every task in the component "
            "images (`make images`) under kfp.local.DockerRunner, as the image's user, through DOCKER_HOST, a "
            "Docker daemon, or a podman API service started for the run."
        ),
    ] = "subprocess",
    image: Annotated[
        str | None,
        typer.Option(help="docker runner: the CPU image (training uses IMAGE-cuda). Default: what `make images` "
                     "builds, localhost/headstart:<version>."),
    ] = None,
) -> None:
    """Run the whole pipeline on this machine with kfp.local on the dataset the run's parameters name.

    S3 and MLflow credentials (AWS_*, MLFLOW_TRACKING_*) come from this shell's environment, as the Kubernetes
    secrets give them to the pods.
    """
    from headstart.kfp.local import run_local

    result = run_local(root, params_file=params, overrides=overrides, arguments=parse_arguments(args),
                       runner=runner, image=image)
    console.print(f"[green]pipeline finished[/]: outputs under {result.run_dir}")
    if result.containers:
        console.print(f"{len(result.containers)} containers ran; see {result.run_dir / 'containers.json'}")
    if result.decision:
        console.print(
            f"decision: {result.decision.get('decision')} ({result.decision.get('model_name')} "
            f"v{result.decision.get('version')}, winner {result.decision.get('winner')})"
        )


@app.command()
def submit(
    host: HostOpt,
    package: PackageOpt = DEFAULT_PACKAGE,
    args: ArgOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run name shown in the UI.")] = None,
    experiment: ExperimentOpt = "headstart",
    namespace: NamespaceOpt = None,
    service_account: AccountOpt = "headstart-pipeline",
    cache: CacheOpt = None,
    token: TokenOpt = None,
) -> None:
    """Start one run of the compiled pipeline on a Kubeflow Pipelines cluster."""
    from headstart.kfp.remote import submit as do_submit

    result = do_submit(host, package, arguments=parse_arguments(args), run_name=run_name, experiment=experiment,
                       namespace=namespace, service_account=service_account, enable_caching=cache, token=token)
    typer.echo(json.dumps({"experiment_id": result.experiment_id, "run_id": result.run_id}))


@app.command()
def schedule(
    host: HostOpt,
    cron: Annotated[str, typer.Option(help="Six-field cron, seconds first: '0 0 3 * * 1' = Mondays 03:00.")],
    name: Annotated[str, typer.Option(help="Recurring run name.")] = "headstart-retraining",
    package: PackageOpt = DEFAULT_PACKAGE,
    args: ArgOpt = None,
    experiment: ExperimentOpt = "headstart",
    namespace: NamespaceOpt = None,
    service_account: AccountOpt = "headstart-pipeline",
    cache: CacheOpt = None,
    token: TokenOpt = None,
) -> None:
    """Schedule retraining: a recurring run, one at a time, skipping missed slots (no catch-up)."""
    from headstart.kfp.remote import schedule as do_schedule

    result = do_schedule(host, cron, package, name=name, arguments=parse_arguments(args), experiment=experiment,
                         namespace=namespace, service_account=service_account, enable_caching=cache, token=token)
    typer.echo(json.dumps({"experiment_id": result.experiment_id, "recurring_run_id": result.recurring_run_id}))
