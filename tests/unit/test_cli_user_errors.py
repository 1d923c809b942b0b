"""A user's mistake on the command line never prints a traceback: a usage error prints one `Error:` line (and a
--help hint) and exits 2; a bad --set stops any command before it does anything. Run through the installed
console script, as people run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADSTART = Path(sys.executable).parent / "headstart"


def headstart(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KFP_HOST")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run([str(HEADSTART), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "named"), [
    (["promote", "--version", "3"], "Missing option '--reason'"),
    (["valdate"], "No such command 'valdate'. Did you mean 'validate'"),
    (["train"], "Missing argument 'role'"),
    (["pipeline", "submit"], "Missing option '--host'"),
], ids=["promote-without-reason", "mistyped-command", "train-without-role", "submit-without-host"])
def test_usage_error_prints_one_line_and_exits_2(tmp_path, args, named):
    res = headstart(*args, cwd=tmp_path)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and named in lines[0], res.stderr
    assert len(lines) <= 2 and all(line.startswith("Try 'headstart") for line in lines[1:]), res.stderr


def test_help_still_works_on_subcommands(tmp_path):
    res = headstart("pipeline", "submit", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "--host" in res.stdout, res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["validate", "--data", "absent", "--no-track", "--set", "train.shared.epoch=2"],
     "train.shared.epoch: unknown key; did you mean train.shared.epochs? (from --set train.shared.epoch=2)"),
    (["pipeline", "compile", "--out", "spec.yaml", "--set", "gat.min_accuracy=0.9"],
     "gat: unknown section; did you mean gate? (from --set gat.min_accuracy=0.9)"),
    (["status", "--set", "gate.min_accuracy=1.5"],
     "gate.min_accuracy: Input should be less than or equal to 1 (got 1.5) (from --set gate.min_accuracy=1.5)"),
    (["run", "--data", "absent", "--set", "gate.min_acuracy=0.9"],
     "gate.min_acuracy: unknown key; did you mean gate.min_accuracy? (from --set gate.min_acuracy=0.9)"),
], ids=["validate-train-typo", "compile-section-typo", "status-gate-value", "run-gate-typo"])
def test_a_bad_override_in_a_section_the_command_does_not_read_stops_it_first(tmp_path, args, message):
    store = f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"
    res = headstart(*args, "--params", str(ROOT / "params.yaml"), "--set", store, cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert message in " ".join(res.stderr.split()), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "it ran before failing"


@pytest.mark.parametrize("store", ["sqlite:///{tmp}/typo/mlflw.db", "file://{tmp}/mlrun"], ids=["sqlite", "file"])
def test_status_on_a_mistyped_local_store_creates_nothing_and_names_it(tmp_path, store):
    uri = store.format(tmp=tmp_path)
    res = headstart("status", "--params", str(ROOT / "params.yaml"), "--set", f"tracking.tracking_uri={uri}",
                    cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert f"tracking.tracking_uri {uri}: no MLflow store at" in " ".join(res.stderr.split()), res.stderr
    assert list(tmp_path.iterdir()) == []


def test_status_on_an_existing_store_writes_nothing_to_it_or_beside_it(tmp_path):
    """A store that exists but has never seen this experiment: status reads, it creates neither the experiment
    nor an artifact folder."""
    import sqlite3

    from mlflow import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    MlflowClient(f"sqlite:///{db}").search_experiments()  # a migrated store with only MLflow's Default experiment
    before = sqlite3.connect(db).execute("SELECT name FROM experiments").fetchall()
    res = headstart("status", "--params", str(ROOT / "params.yaml"), "--set", f"tracking.tracking_uri=sqlite:///{db}",
                    "--set", f"tracking.artifact_root={tmp_path / 'art'}", cwd=tmp_path)
    assert res.returncode == 0 and "is not registered at" in " ".join((res.stdout + res.stderr).split()), res.stderr
    assert sqlite3.connect(db).execute("SELECT name FROM experiments").fetchall() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
