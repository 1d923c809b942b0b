"""evaluate_gpu: evaluation asks for a GPU of the pool, in the CUDA image, only when the
run parameter says so; otherwise it runs on the CPU image without one."""

from __future__ import annotations

from headstart.config import load_params
from tests.helpers import container, guards, k8s, tasks
from tests.pipeline.conftest import ROOT

ON_CPU = "inputs.parameter_values['pipelinechannel--evaluate_gpu'] == false"


def _evaluate_tasks(spec):
    return {n: t for n, t in tasks(spec).items() if t["taskInfo"]["name"] == "evaluate"}


def test_the_gpu_is_requested_only_in_the_branch_where_evaluate_gpu_is_true(compiled):
    _, spec, platform = compiled
    found = _evaluate_tasks(spec)
    assert len(found) == 2
    gpu = [n for n, t in found.items() if "accelerator" in container(spec, t).get("resources", {})]
    cpu = [n for n in found if n not in gpu]
    assert len(gpu) == 1 and len(cpu) == 1
    assert guards(spec)[gpu[0]][-1] == f"!({ON_CPU})"  # runs only when evaluate_gpu is true
    assert guards(spec)[cpu[0]][-1] == ON_CPU
    pool = load_params(ROOT / "params.yaml")["pipeline"]
    g = container(spec, found[gpu[0]])
    accel = g["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu" and int(accel["resourceCount"]) == 1
    assert g["image"] == "registry.test/headstart:9.9-cuda"
    assert k8s(spec, platform, found[gpu[0]])["nodeSelector"]["labels"] == {
        pool["gpu_node_selector_key"]: pool["gpu_node_selector_value"]}
    assert k8s(spec, platform, found[gpu[0]])["tolerations"][0]["key"] == pool["gpu_toleration_key"]
    c = container(spec, found[cpu[0]])
    assert "accelerator" not in c["resources"] and c["image"] == "registry.test/headstart:9.9"
    assert "nodeSelector" not in k8s(spec, platform, found[cpu[0]])


def test_evaluate_gpu_defaults_to_false_and_register_reads_whichever_branch_ran(compiled):
    _, spec, _ = compiled
    param = spec["root"]["inputDefinitions"]["parameters"]["evaluate_gpu"]
    assert param["parameterType"] == "BOOLEAN" and param["defaultValue"] is False
    t = tasks(spec)
    source = t["register-and-gate"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]
    group = spec["components"][t[source["producerTask"]]["componentRef"]["name"]]
    selectors = group["dag"]["outputs"]["artifacts"][source["outputArtifactKey"]]["artifactSelectors"]
    produced_by = {sel["outputArtifactKey"] for sel in selectors}
    assert produced_by == {f"pipelinechannel--{name}-evaluation" for name in _evaluate_tasks(spec)}


def test_kfp_local_builds_one_cpu_evaluate_task(tmp_path):
    """kfp.local cannot merge If/Else artifacts (dsl.OneOf), so local runs build evaluate as one task."""
    from headstart.kfp.spec import compile as compile_spec
    from tests.pipeline.conftest import load_spec

    spec, _ = load_spec(compile_spec("registry.test/headstart:9.9", tmp_path / "p.yaml",
                                     params_file=ROOT / "params.yaml", gpu_evaluation=False,
                                     multi_node_training=False))
    found = _evaluate_tasks(spec)
    assert len(found) == 1
    (task,) = found.values()
    assert "accelerator" not in container(spec, task)["resources"]
    assert not any("evaluate_gpu" in g for g in guards(spec)[next(iter(found))])
