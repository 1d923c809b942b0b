"""`headstart` command line: thin drivers over headstart.steps, called by people and by dvc.yaml."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from headstart.config import load_params, tracking_from_params
from headstart.errors import ConfigError, HeadstartError, ValidationFailed

app = typer.Typer(
    help="Headstart: retrain an image classifier, prove the pre-trained head start, promote only winners.\n\n"
    "The loop: data -> validate -> train finetune + train scratch -> evaluate -> register (gate, promote).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
data_app = typer.Typer(help="Build and inspect the versioned dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _mount_pipeline() -> None:
    # a function, not a module-level import: tests/unit/test_dvc_yaml.py follows cli.py's module-level imports
    # into every stage's code, and no dvc stage runs the pipeline commands
    from headstart.kfp.cli import app as pipeline_app

    app.add_typer(pipeline_app, name="pipeline", help="Compile, run locally, submit or schedule the Kubeflow pipeline.")


_mount_pipeline()
console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read knobs and thresholds from.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a parameter, e.g. --set train.shared.epochs=2 (repeatable)."),
]
DataOpt = Annotated[Path, typer.Option("--data", help="Dataset root: an ImageFolder (<data>/<split>/<class>/<image>) "
                                      "or a packed dataset (index.json + shards, headstart data pack).")]


@data_app.command("import-fashion-mnist")
def import_fashion_mnist(
    out: Annotated[Path, typer.Option(help="Where to write the ImageFolder (replaced atomically, and only if "
                                        "an earlier import wrote it: never your own images).")] = Path("data"),
    source: Annotated[Path | None, typer.Option(help="Folder with the four *-ubyte.gz IDX files. Default: "
                                                "$FASHION_MNIST_DIR, then /usr/share/datasets/fashion-mnist.")] = None,
    download: Annotated[bool, typer.Option(help="Fall back to the upstream download when no local copy.")] = True,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Build data/{train,val,test}/<class>/*.png from Fashion-MNIST (checksums verified, deterministic)."""
    from headstart.data.fashion_mnist import import_fashion_mnist as run

    p = load_params(params, overrides)
    data_cfg, val_cfg = p.get("data", {}), p.get("validate", {})
    result = run(out, val_per_class=int(data_cfg.get("val_per_class", 500)), seed=int(p.get("seed", 42)),
                 source=source, download_dir=Path(".headstart/downloads") if download else None,
                 near_duplicate_max_rms=float(val_cfg.get("near_duplicate_max_rms", 0.01)),
                 near_duplicate_max_hamming=int(val_cfg.get("near_duplicate_max_hamming", 12)))
    console.print(f"[green]imported[/] {result.counts} from {result.source} into {result.out_dir}")


def _size(text: str) -> int:
    """"256MB", "1GiB", "500k" or plain bytes."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
             "g": 10**9, "gb": 10**9, "gib": 2**30}
    value = text.strip().lower()
    number = value.rstrip("kmgib")
    try:
        return int(float(number) * units[value[len(number):]])
    except (KeyError, ValueError):
        raise ConfigError(f"--shard-size {text!r}: give a size such as 256MB, 1GiB or 1000000 (bytes)") from None


@data_app.command("pack", help=(
    "Pack an ImageFolder into WebDataset tar shards + index.json, for datasets too big for one file per image."
    "\n\nDeterministic: the same images give byte-identical shards, so `dvc add <out>` hashes the same."
    "\n\nEvery step takes either form as --data, and either streams through loader workers with "
    "train.shared.data_loading stream, or auto when a split's decoded size passes memory_budget_gib."))
def pack(
    data: Annotated[Path, typer.Option("--data", help="The ImageFolder to pack: <data>/<split>/<class>/<image>.")] = (
        Path("data")),
    out: Annotated[Path, typer.Option(help="Where to write the shards and index.json. Replaced only if an earlier "
                                      "pack wrote it; a folder holding anything else is refused.")] = Path("shards"),
    shard_size: Annotated[str, typer.Option("--shard-size", help="Close a shard once it reaches this size "
                                            "(256MB, 1GiB, bytes).")] = "256MB",
) -> None:
    """Thin driver over headstart.data.shards.pack (the help text is the decorator's)."""
    from headstart.data import shards

    index = shards.pack(data, out, _size(shard_size))
    n_shards = sum(len(s.shards) for s in index.splits.values())
    n_bytes = sum(i.bytes for s in index.splits.values() for i in s.shards)
    n_samples = sum(s.count for s in index.splits.values())
    counts = ", ".join(f"{name} {s.count} in {len(s.shards)}" for name, s in index.splits.items())
    console.print(f"[green]packed[/] {data} into {out}: {n_samples} samples in {n_shards} shards, {n_bytes} bytes "
                  f"({counts}); track it with `dvc add {out}`", soft_wrap=True)  # one line, however long


@app.command()
def validate(
    data: DataOpt = Path("data"),
    out: Annotated[Path, typer.Option(help="Report folder (report.json, report.html, data_docs/).")] = Path(
        "outputs/validation"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    track: Annotated[bool, typer.Option(help="Log the reports to MLflow.")] = True,
) -> None:
    """Validate the dataset (integrity, labels, leakage, distribution, drift); exit 3 on failure."""
    from headstart.steps import validate as step

    p = load_params(params, overrides)
    result = step.run(step.config_from_params(p), data, out, tracking_from_params(p) if track else None)
    table = step.format_failures(result)
    if table:
        console.print(table)
    if not result.passed:
        raise ValidationFailed(f"{data}: validation failed; see {out / 'report.html'}. No training was started.")
    console.print(f"[green]validation passed[/]: {data} (report {out / 'report.html'})")


@app.command()
def train(
    role: Annotated[str, typer.Argument(help="finetune (pre-trained backbone) or scratch (baseline).")],
    data: DataOpt = Path("data"),
    out: Annotated[Path | None, typer.Option(help="Output folder. Default: outputs/<role>.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Train with N processes (DDP: one per GPU, or gloo on CPU) by re-launching "
        "this command under torchrun --standalone. batch_size stays the global batch.")] = 1,
    from_dvc_remote: Annotated[bool, typer.Option(
        "--from-dvc-remote", help="Read --data, a packed folder tracked by DVC in this checkout (its <data>.dvc), "
        "straight from the repository's default DVC remote, streaming the shards: no dvc pull, and the folder "
        "need not be here. S3 credentials and endpoint from the environment (AWS_ENDPOINT_URL_S3). Implies "
        "train.shared.data_loading=stream.")] = False,
) -> None:
    """Train one candidate with the shared engine; settings from train.shared + train.<role>."""
    import subprocess

    from headstart.steps import train as step
    from headstart.training import distributed

    if role not in ("finetune", "scratch"):
        raise ConfigError(f"role {role!r}: choose finetune or scratch")
    p = load_params(params, overrides)
    cfg = step.config_from_params(p, role)
    if nproc > 1 and distributed.env_world_size() <= 1:
        distributed.per_rank_batch(cfg.batch_size, nproc)  # a config error here, not in every rank
        args = ["train", role, "--data", str(data), "--params", str(params)]
        args += [*(["--out", str(out)] if out else []), *[a for o in overrides or [] for a in ("--set", o)]]
        args += ["--from-dvc-remote"] if from_dvc_remote else []
        rc = subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc}", "-m", "headstart.cli", *args])
        if rc:
            console.print(f"[bold red]error:[/] distributed training failed (torchrun exit {rc}); the "
                          "failing rank's error is above. Re-run the same command to resume from the last "
                          "checkpoint.")
            raise SystemExit(rc)
        return
    root: Any = data
    if from_dvc_remote:
        from headstart.data.remote import open_remote

        root = open_remote(data)
        cfg = cfg.model_copy(update={"data_loading": "stream"})  # the memory path reads files on disk
    try:
        result = step.run(cfg, root, out or Path("outputs") / role, tracking_from_params(p))
        main = distributed.is_main()
    finally:
        distributed.shutdown()
    if not main:
        return
    if result.resumed_at:
        console.print(f"resumed from the checkpoint of {result.resumed_at}")
    console.print(f"[green]{role}[/]: best val accuracy {result.best_val_accuracy:.4f} at epoch "
                  f"{result.best_epoch} in {result.seconds:.0f}s (MLflow run {result.run_id})")


@app.command()
def evaluate(
    data: DataOpt = Path("data"),
    finetune: Annotated[Path, typer.Option(help="Fine-tuned model folder.")] = Path("outputs/finetune/model"),
    scratch: Annotated[Path, typer.Option(help="Scratch model folder.")] = Path("outputs/scratch/model"),
    out: Annotated[Path, typer.Option(help="Evaluation folder.")] = Path("outputs/evaluation"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Evaluate both candidates and the current champion on the same test split."""
    from headstart.steps import evaluate as step

    p = load_params(params, overrides)
    result = step.run(step.config_from_params(p), data, {"finetune": finetune, "scratch": scratch}, out,
                      tracking_from_params(p))
    for name, m in result.models.items():
        console.print(f"{name:>9}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")


@app.command()
def register(
    data: DataOpt = Path("data"),
    finetune: Annotated[Path, typer.Option(help="Fine-tuned model folder.")] = Path("outputs/finetune/model"),
    scratch: Annotated[Path, typer.Option(help="Scratch model folder.")] = Path("outputs/scratch/model"),
    evaluation: Annotated[Path, typer.Option("--eval", help="Evaluation folder.")] = Path("outputs/evaluation"),
    out: Annotated[Path, typer.Option(help="Decision folder.")] = Path("outputs/decision"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Register the winner in MLflow, run the gate, promote it to `champion` only if every check passes."""
    from headstart.steps import register as step

    p = load_params(params, overrides)
    cfg, thresholds = step.configs_from_params(p)
    result = step.run(cfg, thresholds, data, {"finetune": finetune, "scratch": scratch}, evaluation, out,
                      tracking_from_params(p))
    verdict = "[green]promoted to champion[/]" if result.promoted else "[yellow]rejected[/] (champion unchanged)"
    console.print(f"{result.model_name} v{result.version} ({result.winner}): {verdict}")


@app.command("champion-ref")
def champion_ref(
    out: Annotated[Path, typer.Option(help="The file evaluate and register depend on.")] = Path(
        "outputs/champion.json"),
    registration: Annotated[Path, typer.Option(help="The last register's record: a champion it promoted "
                                               "is no change.")] = Path("outputs/decision/registration.json"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Write the champion's version for dvc.yaml, so evaluate and register re-run when the champion moves."""
    from headstart.registry import champion_ref as step

    ref, changed = step.write(tracking_from_params(load_params(params, overrides)), out, registration)
    console.print(f"{out}: {'changed' if changed else 'unchanged'} {json.dumps(ref, sort_keys=True)}",
                  highlight=False, markup=False)


@app.command()
def summary(
    outputs: Annotated[Path, typer.Option(help="Folder holding the step outputs.")] = Path("outputs"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Print the run's summary table: candidates, winner, gate checks, promotion, MLflow model."""
    from headstart.summary import render

    Console().print(render(outputs, tracking_from_params(load_params(params, overrides))))


@app.command()
def promote(
    version: Annotated[str, typer.Option("--version", help="Registered model version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the gate is overridden (recorded, required).")],
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Manual override: move `champion` to a version even if its gate failed; records who and why.

    It also opens a fresh window of the gate's false-promotion budget (the schedule `status` shows), and is
    how a person resets a corrupt schedule: promoting the current champion again keeps it and resets it."""
    from headstart.registry import lifecycle

    tracking = tracking_from_params(load_params(params, overrides))
    previous = lifecycle.override(tracking, version, reason)
    console.print(f"[green]{tracking.registered_model} v{version} is champion[/] (was v{previous}); reason recorded")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")] = "rollback",
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Move `champion` back to the version it replaced, and record the rollback."""
    from headstart.registry import lifecycle

    tracking = tracking_from_params(load_params(params, overrides))
    old, new = lifecycle.rollback(tracking, reason)
    console.print(f"[green]rolled back[/] {tracking.registered_model}: champion v{old} -> v{new}")


@app.command()
def status(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show the champion, its metrics and data version, the promotion history, recent rejections and the gate's
    schedule (runs used of the horizon, false-promotion level spent, last reset)."""
    from headstart.registry import lifecycle
    from headstart.summary import render_status

    # an unreachable server: RegistryError, exit 2
    info = lifecycle.status(tracking_from_params(load_params(params, overrides)))
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True, default=str))
    elif not info["registered"]:
        console.print(f"[yellow]{info['model']} is not registered at {info['tracking_uri']}[/]: nothing has been "
                      "registered there yet (run the loop: `make run`), or tracking.registered_model / "
                      "tracking.tracking_uri name another model or server", highlight=False)
    else:
        Console().print(render_status(info))


@contextlib.contextmanager
def _one_loop() -> Iterator[str]:
    """`headstart run`'s steps share one MLflow parent run of their own: a fresh loop id while they run (the
    default, the code and data version, would put every run of one checkout in one group), unless the caller
    set HEADSTART_LOOP_ID."""
    import os
    import uuid

    from headstart.tracking import LOOP_ENV

    before = os.environ.get(LOOP_ENV)
    if not (before or "").strip():
        os.environ[LOOP_ENV] = f"run-{uuid.uuid4().hex[:12]}"
    try:
        yield os.environ[LOOP_ENV]
    finally:
        if before is None:
            os.environ.pop(LOOP_ENV, None)
        else:
            os.environ[LOOP_ENV] = before


@app.command("run")
def run_all(
    data: DataOpt = Path("data"),
    outputs: Annotated[Path, typer.Option(help="Folder for every step's outputs.")] = Path("outputs"),
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Run the whole loop in-process (what `dvc repro` runs stage by stage), then print the summary."""
    load_params(params, overrides, full=True)  # every section's values now: a bad gate threshold before training
    ctx_params = {"params": params, "overrides": overrides}
    with _one_loop():
        validate(data=data, out=outputs / "validation", track=True, **ctx_params)
        for role in ("finetune", "scratch"):
            train(role=role, data=data, out=outputs / role, **ctx_params)
        evaluate(data=data, finetune=outputs / "finetune/model", scratch=outputs / "scratch/model",
                 out=outputs / "evaluation", **ctx_params)
        register(data=data, finetune=outputs / "finetune/model", scratch=outputs / "scratch/model",
                 evaluation=outputs / "evaluation", out=outputs / "decision", **ctx_params)
    summary(outputs=outputs, params=params, overrides=overrides)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user's mistake prints one clear line and exits non-zero, without a traceback."""
    # MLflow's advice aimed at notebook users (type hints, integer columns) is noise in a pipeline log
    for pattern in (".*type hints to the `predict` method", ".*Inferred schema contains integer column",
                    ".*dataset source can be interpreted in multiple ways"):
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
    try:
        app(args=argv, standalone_mode=False)
    except HeadstartError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # click's errors: typer bundles its own click (typer._click)
        sys.exit(_usage_error(exc))


def _usage_error(exc: typer.TyperException) -> int:
    """`Error: <what>` and the command's --help hint, not click's usage block; exit 2 for a usage error."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `headstart` alone: its message is the help (exit 2, as click)
        exc.show()  # type: ignore[attr-defined]
        return exc.exit_code
    typer.echo(f"Error: {exc.format_message()}", err=True)
    if ctx is not None:
        typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
    return exc.exit_code


if __name__ == "__main__":
    main()
