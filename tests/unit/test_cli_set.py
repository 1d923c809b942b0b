"""The README says every command takes `--set`; summary, promote, rollback and status
did not. They read the tracking section, so `--set tracking.*` must reach them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headstart.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich colours the help when it thinks it may


# The README's command table, which says every command in it takes --params and --set.
COMMANDS = [["data", "import-fashion-mnist"], ["validate"], ["train"], ["evaluate"], ["register"], ["summary"],
            ["status"], ["promote"], ["rollback"], ["run"], ["pipeline", "compile"], ["pipeline", "run-local"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_in_the_readme_table_takes_set(command: list[str]):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert "--set" in _plain(res.output) and "--params" in _plain(res.output)


def test_status_set_tracking_uri_reaches_that_store(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would win over --set
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model("elsewhere-model")
    mv = c.create_model_version("elsewhere-model", source=str(tmp_path / "model"), tags={"data.dvc_md5": "d1.dir"})
    c.set_registered_model_alias("elsewhere-model", "champion", mv.version)

    res = runner.invoke(app, ["status", "--json", "--params", str(ROOT / "params.yaml"),
                              "--set", f"tracking.tracking_uri={uri}",
                              "--set", "tracking.registered_model=elsewhere-model"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["model"] == "elsewhere-model"
    assert info["champion"]["version"] == "1" and info["champion"]["data"] == "d1.dir"
