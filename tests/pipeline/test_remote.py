"""submit and schedule with the real kfp.Client against a recording KFP API on 127.0.0.1."""

from __future__ import annotations

import pytest

from headstart.errors import ConfigError
from headstart.kfp.remote import schedule, submit


def test_submit_creates_a_run_of_the_compiled_spec(fake_kfp, compiled):
    package, spec, platform = compiled
    result = submit(fake_kfp.url, package, arguments={"epochs": 3, "data_rev": "v1.2"}, run_name="nightly")
    assert (result.experiment_id, result.run_id) == ("exp-1", "run-1")
    assert [r.body["display_name"] for r in fake_kfp.find("POST", "/apis/v2beta1/experiments")] == [
        "headstart"
    ]
    (run,) = fake_kfp.find("POST", "/apis/v2beta1/runs")
    assert run.body["display_name"] == "nightly"
    assert run.body["experiment_id"] == "exp-1"
    assert run.body["service_account"] == "headstart-pipeline"
    assert run.body["runtime_config"]["parameters"] == {"epochs": 3, "data_rev": "v1.2"}
    sent = run.body["pipeline_spec"]
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == spec["pipelineInfo"]["name"]
    assert sent["platform_spec"] == platform  # secrets, GPU pool and workspace travel with the run


def test_submit_reuses_the_experiment_and_can_turn_caching_off(fake_kfp, compiled):
    package, _, _ = compiled
    submit(fake_kfp.url, package)
    submit(fake_kfp.url, package, enable_caching=False)
    assert len(fake_kfp.find("POST", "/apis/v2beta1/experiments")) == 1
    first, second = (
        r.body["pipeline_spec"]["pipeline_spec"] for r in fake_kfp.find("POST", "/apis/v2beta1/runs")
    )

    def cached(spec):
        return [
            t.get("cachingOptions", {}).get("enableCache", False)
            for t in spec["root"]["dag"]["tasks"].values()
        ]

    assert any(cached(first)) and not any(cached(second))


def test_schedule_one_at_a_time_without_catchup(fake_kfp, compiled):
    package, _, _ = compiled
    args = {"epochs": 5, "data_repo": "https://git.test/headstart.git", "data_rev": "main"}
    result = schedule(fake_kfp.url, "0 0 3 * * 1", package, name="weekly", arguments=args)
    assert result.recurring_run_id == "rr-1"
    (job,) = fake_kfp.find("POST", "/apis/v2beta1/recurringruns")
    body = job.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["mode"] == "ENABLE" and body["display_name"] == "weekly"
    assert body["experiment_id"] == "exp-1" and body["service_account"] == "headstart-pipeline"
    assert body["runtime_config"]["parameters"] == args
    assert "pipeline_spec" in body["pipeline_spec"]


def test_five_field_cron_is_explained(fake_kfp, compiled):
    with pytest.raises(ConfigError, match=r"'0 0 3 \* \* \*'"):
        schedule(fake_kfp.url, "0 3 * * *", compiled[0])
    assert fake_kfp.requests == []


def test_unknown_run_parameter_is_refused_before_any_request(fake_kfp, compiled):
    with pytest.raises(ConfigError, match="no run parameter epoch;"):
        submit(fake_kfp.url, compiled[0], arguments={"epoch": 3})
    assert fake_kfp.requests == []


def test_missing_package_says_compile(fake_kfp, tmp_path):
    with pytest.raises(ConfigError, match="headstart pipeline compile"):
        submit(fake_kfp.url, tmp_path / "nothing.yaml")


def test_host_without_scheme_or_not_answering(compiled, monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("kfp.client.client.time.sleep", lambda s: None)
    with pytest.raises(ConfigError, match="scheme"):
        submit("localhost:8080", compiled[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(ConfigError, match="did not answer"):
        submit(f"http://127.0.0.1:{port}", compiled[0])


def test_schedule_without_data_repo_is_refused_before_any_request(fake_kfp, compiled):
    """The README's example had no data_repo: every scheduled run would have failed at fetch."""
    with pytest.raises(ConfigError, match=r"data_repo is empty: a scheduled run.*--arg data_repo="):
        schedule(fake_kfp.url, "0 0 3 * * 1", compiled[0], arguments={"data_rev": "main"})
    with pytest.raises(ConfigError, match="data_repo is empty"):
        schedule(fake_kfp.url, "0 0 3 * * 1", compiled[0], arguments={"data_repo": ""})
    assert fake_kfp.requests == []


def test_cli_schedule_without_data_repo_exits_with_the_message(fake_kfp, compiled):
    from typer.testing import CliRunner

    from headstart.cli import app

    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", fake_kfp.url, "--cron", "0 0 3 * * 1",
                                      "--package", str(compiled[0]), "--arg", "data_rev=main"])
    assert result.exit_code != 0 and fake_kfp.requests == []
    assert "data_repo is empty" in str(result.exception) + result.output


def test_multi_node_run_without_an_s3_staging_uri_is_refused(fake_kfp, compiled):
    package = compiled[0]
    for args in ({"distributed_nodes": 2}, {"distributed_nodes": 3, "staging_uri": "/tmp/stage"}):
        with pytest.raises(ConfigError, match=r"staging_uri=.*s3:// folder"):
            submit(fake_kfp.url, package, arguments=args)
    assert fake_kfp.requests == []
    submit(fake_kfp.url, package, arguments={"distributed_nodes": 1})  # in-pod: no staging needed
    submit(fake_kfp.url, package, arguments={"distributed_nodes": 2, "staging_uri": "s3://bucket/stage"})
    assert len(fake_kfp.find("POST", "/apis/v2beta1/runs")) == 2
