"""Assertions on the compiled pipeline spec (not golden text): GPU pool, secrets, retries, caching, inputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from headstart.config import load_params
from headstart.kfp.settings import MLFLOW_KEYS, S3_KEYS, settings_from_params
from tests.helpers import by_display, container, guards, k8s, tasks
from tests.pipeline.conftest import ROOT, load_spec

TRAIN = ("train-candidate", "train-candidate-2")
EVALUATE_GPU = "evaluate-candidates-2"  # the evaluate_gpu=True branch; evaluate-candidates is the CPU one
ALL_TASKS = (
    "fetch-data",
    "validate-data",
    *TRAIN,
    "evaluate-candidates",
    EVALUATE_GPU,
    "register-and-gate",
    "act-on-decision",
    "act-on-decision-2",
    "data-rejected",
)


def test_every_step_is_a_task(compiled):
    _, spec, _ = compiled
    assert set(ALL_TASKS) <= set(tasks(spec))
    names = set(by_display(spec))
    assert {
        "fetch-data",
        "validate-data",
        "train-finetune",
        "train-scratch",
        "evaluate",
        "register-and-gate",
        "promote-champion",
        "record-rejection",
        "stop-on-invalid-data",
    } <= names


def test_training_requests_a_gpu_with_resources_and_runs_on_the_pool(compiled):
    _, spec, platform = compiled
    pool = load_params(ROOT / "params.yaml")["pipeline"]
    for name in TRAIN:
        task = tasks(spec)[name]
        res = container(spec, task)["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert int(res["accelerator"]["resourceCount"]) == 1
        assert res["resourceCpuRequest"] and res["resourceCpuLimit"]
        assert res["resourceMemoryRequest"] and res["resourceMemoryLimit"]
        cfg = k8s(spec, platform, task)
        assert cfg["nodeSelector"]["labels"] == {
            pool["gpu_node_selector_key"]: pool["gpu_node_selector_value"]
        }
        assert cfg["tolerations"] == [
            {
                "key": pool["gpu_toleration_key"],
                "operator": "Equal",
                "value": pool["gpu_toleration_value"],
                "effect": pool["gpu_toleration_effect"],
            }
        ]
        assert container(spec, task)["image"] == "registry.test/headstart:9.9-cuda"


def test_no_other_task_requests_a_gpu_or_the_pool(compiled):
    _, spec, platform = compiled
    for name, task in tasks(spec).items():
        if name in (*TRAIN, EVALUATE_GPU) or "dag" in spec["components"][task["componentRef"]["name"]]:
            continue
        c = container(spec, task)
        assert "accelerator" not in c.get("resources", {}), name
        assert c["image"] == "registry.test/headstart:9.9", name
        cfg = k8s(spec, platform, task)
        assert "tolerations" not in cfg and "nodeSelector" not in cfg, name
        assert c["resources"]["resourceCpuLimit"] and c["resources"]["resourceMemoryLimit"], name


def test_training_runs_in_parallel_after_validation(compiled):
    _, spec, _ = compiled
    t = tasks(spec)
    assert "train-candidate" not in t["train-candidate-2"].get("dependentTasks", [])
    assert "train-candidate-2" not in t["train-candidate"].get("dependentTasks", [])
    valid = "inputs.parameter_values['pipelinechannel--validate-data-Output'] == true"
    multi = "int(inputs.parameter_values['pipelinechannel--distributed_nodes']) > 1"
    for name in TRAIN:  # in-pod training unless a multi-node job is asked for
        assert guards(spec)[name] == [valid, f"!({multi})"], name
    for name in ("train-distributed", "train-distributed-2"):
        assert guards(spec)[name] == [valid, multi], name
    # a multi-node run stages the dataset once for both jobs and deletes it after both, whether they succeeded
    assert guards(spec)["stage-data"] == guards(spec)["unstage-data"] == [valid, multi]
    for name in ("train-distributed", "train-distributed-2"):
        staged = t[name]["inputs"]["parameters"]["staged_data"]["taskOutputParameter"]
        assert staged["producerTask"] == "stage-data", name
    assert set(t["unstage-data"]["dependentTasks"]) >= {"stage-data", "train-distributed", "train-distributed-2"}
    assert t["unstage-data"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # evaluation (its CPU/GPU If/Else group) waits for the candidates' If/Else group, whichever branch ran
    on_cpu = "inputs.parameter_values['pipelinechannel--evaluate_gpu'] == false"
    scoring = t["register-and-gate"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"]
    branches = {n for n in t[scoring]["dependentTasks"] if n.startswith("condition-branches")}
    assert len(branches) == 1
    assert guards(spec)["evaluate-candidates"] == [valid, on_cpu]
    assert guards(spec)[EVALUATE_GPU] == [valid, f"!({on_cpu})"]
    assert guards(spec)["register-and-gate"] == [valid]
    assert scoring in t["register-and-gate"]["dependentTasks"]
    assert guards(spec)["data-rejected"] == [f"!({valid})"]
    assert guards(spec)["fetch-data"] == guards(spec)["validate-data"] == []


def test_secrets_are_env_from_kubernetes_secrets_only(compiled):
    _, spec, platform = compiled
    want = {
        "fetch-data": {"headstart-s3"},
        "validate-data": {"headstart-mlflow"},
        "train-candidate": {"headstart-s3", "headstart-mlflow"},
        "train-candidate-2": {"headstart-s3", "headstart-mlflow"},
        "evaluate-candidates": {"headstart-s3", "headstart-mlflow"},  # s3: a prediction store at s3://
        EVALUATE_GPU: {"headstart-s3", "headstart-mlflow"},
        "register-and-gate": {"headstart-mlflow"},
        "act-on-decision": {"headstart-mlflow"},
        "act-on-decision-2": {"headstart-mlflow"},
        "data-rejected": set(),
    }
    keys = {"headstart-s3": S3_KEYS, "headstart-mlflow": MLFLOW_KEYS}
    for name, secrets in want.items():
        mounted = k8s(spec, platform, tasks(spec)[name]).get("secretAsEnv", [])
        assert {m["secretName"] for m in mounted} == secrets, name
        for secret in secrets:  # required keys must be in the secret; optional ones may be missing
            found = {bool(m.get("optional")): {e["envVar"] for e in m["keyToEnv"]}
                     for m in mounted if m["secretName"] == secret}
            assert found == {k: v for k, v in {False: set(keys[secret].required),
                                               True: set(keys[secret].optional)}.items() if v}, (name, secret)
        assert all(e["envVar"] == e["secretKey"] for m in mounted for e in m["keyToEnv"])
    for name in want:
        assert k8s(spec, platform, tasks(spec)[name])["podMetadata"]["labels"] == {
            "headstart.io/pipeline": "true"
        }


def test_the_docker_runner_passes_exactly_what_the_secrets_give_the_pods(compiled):
    """One list for both: S3's own endpoint, temporary keys' token, the region and the attempt bound included."""
    from headstart.kfp.local import secret_env

    _, spec, platform = compiled
    steps = [t for t in tasks(spec).values() if "executorLabel" in spec["components"][t["componentRef"]["name"]]]
    pods = {e["envVar"] for t in steps for m in k8s(spec, platform, t).get("secretAsEnv", []) for e in m["keyToEnv"]}
    assert {"AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS"} <= pods
    environ = dict.fromkeys(pods | {"HOME", "PATH", "AWS_PROFILE", "DOCKER_HOST"}, "set")
    assert set(secret_env(environ)) == pods


def test_no_secret_value_or_credential_parameter_in_the_spec(tmp_path, monkeypatch):
    from headstart.kfp.spec import compile as compile_spec

    sentinels = {
        "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-4f1c",
        "AWS_ACCESS_KEY_ID": "SENTINELKEYID9",
        "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-pw-77",
        "MLFLOW_TRACKING_USERNAME": "sentinel-user",
        "MLFLOW_TRACKING_URI": "http://sentinel-mlflow.invalid:5000",
    }
    for k, v in sentinels.items():
        monkeypatch.setenv(k, v)
    out = compile_spec("registry.test/headstart:9.9", tmp_path / "p.yaml", params_file=ROOT / "params.yaml")
    text = out.read_text()
    for value in sentinels.values():
        assert value not in text
    spec, _ = load_spec(out)
    for name in spec["root"]["inputDefinitions"]["parameters"]:
        assert not any(word in name.lower() for word in ("password", "secret", "token", "access_key"))


def test_retry_policy(compiled):
    _, spec, _ = compiled
    t = tasks(spec)
    for name in TRAIN:
        policy = t[name]["retryPolicy"]
        assert policy["maxRetryCount"] == 3
        assert policy["backoffDuration"] == "60s" and policy["backoffFactor"] == 2.0
        assert policy["backoffMaxDuration"] == "3600s"
    assert t["fetch-data"]["retryPolicy"]["maxRetryCount"] == 2
    for name in ("register-and-gate", "act-on-decision", "act-on-decision-2", "evaluate-candidates"):
        assert "retryPolicy" not in t[name], f"{name} must not repeat registry writes"


def test_gpu_evaluation_retries_as_training_does(compiled):
    """Both run on the GPU pool, whose spot nodes may be taken away mid-task: a preempted evaluation is re-run."""
    _, spec, _ = compiled
    t = tasks(spec)
    assert "accelerator" in container(spec, t[EVALUATE_GPU])["resources"]
    assert t[EVALUATE_GPU].get("retryPolicy") == t["train-candidate"]["retryPolicy"]
    retries = settings_from_params(load_params(ROOT / "params.yaml")).train_retries
    assert retries > 0 and t[EVALUATE_GPU]["retryPolicy"]["maxRetryCount"] == retries


def test_caching_on_for_fetch_validate_train_off_for_registry_steps(compiled):
    _, spec, _ = compiled
    t = tasks(spec)
    for name in ("fetch-data", "validate-data", *TRAIN):
        assert t[name]["cachingOptions"].get("enableCache") is True, name
    for name in ("evaluate-candidates", EVALUATE_GPU, "register-and-gate", "act-on-decision", "act-on-decision-2"):
        assert not t[name]["cachingOptions"].get("enableCache"), name


def test_decision_branches_promote_or_record(compiled):
    _, spec, _ = compiled
    promoted = "inputs.parameter_values['pipelinechannel--register-and-gate-decision'] == 'promoted'"
    g, shown = guards(spec), {t["taskInfo"]["name"]: n for n, t in tasks(spec).items()}
    assert g[shown["promote-champion"]][-1] == promoted
    assert g[shown["record-rejection"]][-1] == f"!({promoted})"
    for name in ("promote-champion", "record-rejection"):
        source = tasks(spec)[shown[name]]["inputs"]["artifacts"]["decision"]["componentInputArtifact"]
        assert source == "pipelinechannel--register-and-gate-decision_files"


def test_parameters_defaults_and_descriptions(compiled):
    _, spec, _ = compiled
    params = load_params(ROOT / "params.yaml")
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    expected = {
        "data_repo",
        "data_rev",
        "dvc_remote",
        "backbone",
        "weights",
        "image_size",
        "epochs",
        "images_per_class",
        "finetune_lr_head",
        "finetune_lr_backbone",
        "scratch_lr_head",
        "scratch_lr_backbone",
        "min_accuracy",
        "min_gain_over_baseline",
        "max_regression",
        "max_class_recall_drop",
        "registered_model",
        "overrides",
        "distributed_nodes",
        "gpus_per_node",
        "staging_uri",
        "evaluate_gpu",
    }
    assert set(inputs) == expected
    for name, p in inputs.items():
        assert p.get("description"), f"{name} has no description for the UI"
        assert "defaultValue" in p, name
    ft, gate = params["train"]["finetune"], params["gate"]
    assert inputs["backbone"]["defaultValue"] == ft["backbone"]
    assert inputs["finetune_lr_head"]["defaultValue"] == ft["lr_head"]
    assert inputs["image_size"]["defaultValue"] == ft["image_size"]
    assert inputs["epochs"]["defaultValue"] == params["train"]["shared"]["epochs"]
    assert inputs["min_accuracy"]["defaultValue"] == gate["min_accuracy"]
    assert inputs["registered_model"]["defaultValue"] == params["tracking"]["registered_model"]
    assert spec["pipelineInfo"]["description"].startswith("Retrain")


def test_checkpoints_go_to_the_run_workspace(compiled, tmp_path):
    _, spec, platform = compiled
    for name in TRAIN:
        root = tasks(spec)[name]["inputs"]["parameters"]["checkpoint_root"]["runtimeValue"]["constant"]
        assert root == "{{$.workspace_path}}"
    assert platform["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]["size"] == "20Gi"

    from headstart.kfp.spec import compile as compile_spec

    out = compile_spec("r/h:1", tmp_path / "p.yaml", params_file=ROOT / "params.yaml", workspace_size="")
    spec2, platform2 = load_spec(out)
    assert "pipelineConfig" not in platform2["platforms"]["kubernetes"]
    root = tasks(spec2)["train-candidate"]["inputs"]["parameters"]["checkpoint_root"]["runtimeValue"][
        "constant"
    ]
    assert root == ""


# Run in a child whose working directory is outside the checkout and whose path holds only the package under test.
COMPILE_ELSEWHERE = """
import json, sys
from pathlib import Path

from headstart.kfp.cli import app

try:
    app(["compile", "--out", "spec.yaml"])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
import headstart, headstart.kfp.pipeline, kfp

checkout = Path(sys.argv[1])
outside = [checkout / "pipelines", checkout / "components"]
print(json.dumps({
    "path": [str(Path(p or ".").resolve()) for p in sys.path],
    "from_checkout": sorted(n for n, m in list(sys.modules.items())
                            if any(Path(getattr(m, "__file__", None) or "/").resolve().is_relative_to(o)
                                   for o in outside)),
    "components": "components" in sys.modules,
    "pipeline": headstart.kfp.pipeline.__file__,
    "headstart": headstart.__file__,
    "kfp": kfp.__file__,
}))
"""


def test_the_committed_spec_is_what_the_installed_package_compiles(tmp_path):
    """`headstart pipeline compile` run outside the checkout, with neither pipelines/ nor components/ on the
    path, writes the committed spec: it is built from the package alone. Fails, too, when the package or
    params.yaml changed without `headstart pipeline compile`."""
    import shutil
    import subprocess
    import sys

    import headstart

    committed = ROOT / "pipelines" / "headstart_pipeline.yaml"
    assert committed.is_file(), "run `headstart pipeline compile` and commit pipelines/headstart_pipeline.yaml"
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    package = Path(headstart.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(package.parent)  # the tree under test, not another editable install
    done = subprocess.run([sys.executable, "-c", COMPILE_ELSEWHERE, str(ROOT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(ROOT.resolve()) not in child["path"]
    assert child["from_checkout"] == [] and not child["components"]
    assert Path(child["headstart"]).resolve().parent == package
    assert Path(child["pipeline"]).resolve() == package / "kfp" / "pipeline.py"
    assert not Path(child["kfp"]).resolve().is_relative_to(package)  # `import kfp` is the kfp package
    assert load_spec(tmp_path / "spec.yaml") == load_spec(committed), (
        "pipelines/headstart_pipeline.yaml is stale: run `headstart pipeline compile` and commit it"
    )


@pytest.mark.parametrize(
    "bad", [{"train_cpu_limit": "lots"}, {"memory_limit": "8 GB"}, {"train_retries": "many"}]
)
def test_bad_settings_are_config_errors(tmp_path, bad):
    from headstart.errors import ConfigError
    from headstart.kfp.spec import compile as compile_spec

    with pytest.raises(ConfigError, match="pipeline\\."):
        compile_spec("r/h:1", tmp_path / "p.yaml", params_file=ROOT / "params.yaml", **bad)


def test_image_defaults_from_registry_and_tag(tmp_path):
    from headstart.kfp.spec import compile as compile_spec

    out = compile_spec(
        None,
        tmp_path / "p.yaml",
        params_file=ROOT / "params.yaml",
        image_registry="ghcr.io/acme",
        image_tag="1.2.3",
    )
    spec, _ = load_spec(out)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/acme/headstart:1.2.3", "ghcr.io/acme/headstart:1.2.3-cuda"}


def body_source(spec: dict, task: dict) -> str:
    """What a task runs: its component's source in the spec is one call into headstart.kfp.bodies
    (tests/pipeline/test_components.py); the source of the function it calls."""
    import inspect

    from headstart.kfp import bodies

    called = re.findall(r"bodies\.(\w+)\(", "\n".join(container(spec, task)["command"]))
    assert len(called) == 1, called
    return inspect.getsource(getattr(bodies, called[0]))


def test_fetch_is_cached_on_the_commit_an_uncached_resolver_finds(compiled):
    """A branch name as fetch's cache key returned the first download forever; the commit is the data version."""
    _, spec, _ = compiled
    t = tasks(spec)
    resolver, fetched = t["resolve-data-rev"], t["fetch-data"]
    assert not resolver["cachingOptions"].get("enableCache")
    assert resolver["inputs"]["parameters"] == {"data_repo": {"componentInputParameter": "data_repo"},
                                                "data_rev": {"componentInputParameter": "data_rev"}}
    assert fetched["cachingOptions"]["enableCache"] is True
    assert fetched["inputs"]["parameters"]["data_rev"] == {
        "taskOutputParameter": {"producerTask": "resolve-data-rev", "outputParameterKey": "Output"}
    }
    assert "resolve-data-rev" in fetched["dependentTasks"]
    assert "resolve_rev(data_repo, data_rev)" in body_source(spec, resolver)
    assert resolver["retryPolicy"]["maxRetryCount"] == fetched["retryPolicy"]["maxRetryCount"]


def test_the_pytorchjob_launcher_knows_its_own_pod(compiled):
    """POD_NAME / POD_UID / POD_NAMESPACE from the downward API: the job's ownerReference to the launcher."""
    _, spec, platform = compiled
    for name in ("train-distributed", "train-distributed-2"):
        env = k8s(spec, platform, tasks(spec)[name])["fieldPathAsEnv"]
        assert {e["name"]: e["fieldPath"] for e in env} == {
            "POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}


def test_every_task_that_opens_mlflow_runs_groups_them_by_the_data_version_without_touching_its_cache_key(compiled):
    """One parent run per loop: a task that runs a step that tracks in MLflow (or launches the PyTorchJob that
    does) sets its loop id from the Dataset's data version (kfp_io.use_loop); without it a pod's loop id would
    be the same for every run of an image. No task takes a run-specific input for it: that would enter the
    cache key of validate and the trainings, and an unchanged dataset would be retrained every week."""
    _, spec, _ = compiled
    steps = set()
    for name, task in tasks(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            continue
        assert "loop_id" not in task.get("inputs", {}).get("parameters", {}), name
        assert "pipeline_job_uuid" not in json.dumps(task.get("inputs", {})), name
        code = body_source(spec, task)
        if re.search(r"from headstart\.steps import (validate|train|evaluate|register)\b", code) or (
                "pytorchjob.train_on_cluster(" in code):
            steps.add(name)
            assert "kfp_io.use_loop(dict(dataset.metadata))" in code, name
    assert {"validate-data", *TRAIN, "evaluate-candidates", EVALUATE_GPU, "register-and-gate"} <= steps
    if settings_from_params(load_params(ROOT / "params.yaml")).multi_node_training:
        assert {"train-distributed", "train-distributed-2"} <= steps
