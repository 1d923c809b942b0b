"""`headstart pipeline ...` commands through Typer: arguments, output, and user errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from headstart.errors import ConfigError
from headstart.kfp.cli import app, parse_arguments
from tests.pipeline.conftest import ROOT, load_spec

runner = CliRunner()


def test_compile_with_image_options(tmp_path):
    out = tmp_path / "spec.yaml"
    res = runner.invoke(
        app,
        [
            "compile",
            "--image",
            "ghcr.io/acme/headstart:2.0",
            "--out",
            str(out),
            "--params",
            str(ROOT / "params.yaml"),
            "--no-workspace",
        ],
    )
    assert res.exit_code == 0, res.output
    spec, platform = load_spec(out)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/acme/headstart:2.0", "ghcr.io/acme/headstart:2.0-cuda"}
    assert "pipelineConfig" not in platform["platforms"]["kubernetes"]


def test_submit_and_schedule_print_ids(fake_kfp, compiled):
    res = runner.invoke(
        app,
        ["submit", "--host", fake_kfp.url, "--package", str(compiled[0]), "--arg", "epochs=2", "--no-cache"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"experiment_id": "exp-1", "run_id": "run-1"}
    res = runner.invoke(
        app, ["schedule", "--host", fake_kfp.url, "--cron", "0 0 3 * * *", "--package", str(compiled[0]),
              "--arg", "data_repo=https://git.test/headstart.git"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["recurring_run_id"] == "rr-1"
    (run,) = fake_kfp.find("POST", "/apis/v2beta1/runs")
    assert run.body["runtime_config"]["parameters"] == {"epochs": 2}


def test_parse_arguments_reads_yaml_values():
    assert parse_arguments(["epochs=3", "overrides=[a=1, b=2]", "data_rev=v1"]) == {
        "epochs": 3,
        "overrides": ["a=1", "b=2"],
        "data_rev": "v1",
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_arguments(["epochs"])


def test_user_errors_are_headstart_errors(fake_kfp, compiled):
    res = runner.invoke(
        app, ["schedule", "--host", fake_kfp.url, "--cron", "0 3 * * *", "--package", str(compiled[0])]
    )
    assert isinstance(res.exception, ConfigError)
