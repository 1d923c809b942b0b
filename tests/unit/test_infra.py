"""infra/ agrees with the pipeline and keeps its security promises, checked statically.

The GPU pool's taint and label (Terraform) must be what the pipeline's toleration and
node selector (params.yaml `pipeline:`) target, or training pods never schedule. The
kustomize overlays must build, commit no secret values, and run MLflow locked down.
The full lint (hadolint, kubernetes-validate, checkov) is `make lint-infra`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from headstart.kfp.settings import MLFLOW_KEYS, S3_KEYS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
OVERLAYS = ("gke", "eks", "onprem")
# Terraform's spelling of taint effects -> Kubernetes'.
TF_EFFECTS = {
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}
# the template holds each secret's required keys, the list the pipeline mounts and the docker runner passes
PIPELINE_SECRETS = {"headstart-s3": set(S3_KEYS.required), "headstart-mlflow": set(MLFLOW_KEYS.required)}


# --- Terraform ---------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """python-hcl2 >= 5 keeps string quotes and adds __is_block__; older versions don't."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class TfModule:
    """The parsed .tf files of one directory, with `local.x` and `var.x` resolution."""

    def __init__(self, directory: Path) -> None:
        hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is needed to parse infra/terraform")
        self.blocks: dict[str, list] = {}
        for path in sorted(directory.glob("*.tf")):
            with path.open() as fh:
                for key, value in _clean(hcl2.load(fh)).items():
                    self.blocks.setdefault(key, []).extend(value)
        self.locals = {k: v for block in self.blocks.get("locals", []) for k, v in block.items()}
        self.variables = {
            name: body for block in self.blocks.get("variable", []) for name, body in block.items()
        }

    def resolve(self, value: Any) -> Any:
        match = re.fullmatch(r"\$\{(local|var)\.(\w+)\}", value) if isinstance(value, str) else None
        if not match:
            return value
        kind, name = match.groups()
        if kind == "local":
            return self.resolve(self.locals[name])
        return self.variables[name]["default"]

    def resource(self, rtype: str, name: str) -> dict:
        for block in self.blocks.get("resource", []):
            if rtype in block and name in block[rtype]:
                return block[rtype][name]
        raise AssertionError(f"resource {rtype}.{name} not found")


def _one_block(body: dict, key: str) -> dict:
    blocks = body[key]
    blocks = blocks if isinstance(blocks, list) else [blocks]
    assert len(blocks) == 1, f"expected one {key} block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def pipeline_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["pipeline"]


@pytest.fixture(scope="module")
def gke() -> tuple[TfModule, dict]:
    mod = TfModule(INFRA / "terraform" / "gke")
    return mod, mod.resource("google_container_node_pool", "gpu")


@pytest.fixture(scope="module")
def eks() -> tuple[TfModule, dict]:
    mod = TfModule(INFRA / "terraform" / "eks")
    return mod, mod.resource("aws_eks_node_group", "gpu")


def _assert_taint(mod: TfModule, taint: dict, params: dict) -> None:
    assert mod.resolve(taint["key"]) == params["gpu_toleration_key"]
    assert mod.resolve(taint["value"]) == params["gpu_toleration_value"]
    assert TF_EFFECTS[mod.resolve(taint["effect"])] == params["gpu_toleration_effect"]


def _assert_label(mod: TfModule, labels: Any, params: dict) -> None:
    labels = {k: mod.resolve(v) for k, v in mod.resolve(labels).items()}
    assert labels.get(params["gpu_node_selector_key"]) == params["gpu_node_selector_value"], labels


def test_gke_taint_and_label_match_pipeline_params(gke, pipeline_params) -> None:
    mod, pool = gke
    node_config = _one_block(pool, "node_config")
    _assert_taint(mod, _one_block(node_config, "taint"), pipeline_params)
    _assert_label(mod, node_config["labels"], pipeline_params)


def test_eks_taint_and_label_match_pipeline_params(eks, pipeline_params) -> None:
    mod, group = eks
    _assert_taint(mod, _one_block(group, "taint"), pipeline_params)
    _assert_label(mod, group["labels"], pipeline_params)


def test_gpu_pools_scale_from_zero(gke, eks) -> None:
    gke_mod, pool = gke
    assert gke_mod.resolve(_one_block(pool, "autoscaling")["total_min_node_count"]) == 0
    eks_mod, group = eks
    assert eks_mod.resolve(_one_block(group, "scaling_config")["min_size"]) == 0


def test_gke_pool_has_gpus_with_managed_driver_and_spot_option(gke) -> None:
    mod, pool = gke
    node_config = _one_block(pool, "node_config")
    accelerator = _one_block(node_config, "guest_accelerator")
    assert accelerator["type"] == "${var.gpu_type}" and accelerator["count"] == "${var.gpu_count}"
    assert "gpu_driver_installation_config" in accelerator
    assert node_config["spot"] == "${var.spot}"
    for var in ("machine_type", "gpu_type", "gpu_count", "min_nodes", "max_nodes", "spot"):
        assert var in mod.variables, var


def test_terraform_declares_no_credentials() -> None:
    text = "\n".join(p.read_text() for p in (INFRA / "terraform").rglob("*.tf"))
    for word in ("access_key", "secret_key", "credentials", "token"):
        assert not re.search(rf"^\s*{word}\s*=", text, re.M), word


# --- Kubernetes manifests ---------------------------------------------------------------


def _yaml_docs(paths) -> list[tuple[Path, dict]]:
    return [(p, d) for p in paths for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]


def test_no_secret_manifest_carries_a_value() -> None:
    secrets = [
        (p, d) for p, d in _yaml_docs(sorted((INFRA / "k8s").rglob("*.yaml"))) if d.get("kind") == "Secret"
    ]
    assert secrets, "the Secret templates are missing"
    for path, doc in secrets:
        for field in ("data", "stringData"):
            for key, value in (doc.get(field) or {}).items():
                assert value in (None, ""), f"{path}: {doc['metadata']['name']}.{key} carries a value"


def test_pipeline_secret_templates_have_the_names_and_keys_the_pipeline_mounts() -> None:
    docs = _yaml_docs([INFRA / "k8s" / "secrets" / "pipeline-secrets.yaml"])
    found = {
        d["metadata"]["name"]: set(d.get("stringData", {})) for _, d in docs if d.get("kind") == "Secret"
    }
    assert found == PIPELINE_SECRETS


def _check_mlflow_pod(pod: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = [c for c in pod["containers"] if c["name"] == "mlflow"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    # The read-only root filesystem leaves /tmp, an emptyDir, as the only writable path.
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert "latest" not in container["image"] and ":" in container["image"]
    args = container["args"]
    assert args[0] == "server"
    assert "--serve-artifacts" in args
    assert any(a.startswith("--artifacts-destination=") for a in args)
    assert "--app-name=basic-auth" in args


def test_mlflow_deployment_is_locked_down() -> None:
    (deployment,) = [
        d
        for _, d in _yaml_docs([INFRA / "k8s" / "base" / "mlflow" / "deployment.yaml"])
        if d["kind"] == "Deployment"
    ]
    _check_mlflow_pod(deployment["spec"]["template"]["spec"])


def _kustomize(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so the kustomize overlays cannot be built")
    proc = subprocess.run(
        [kubectl, "kustomize", str(INFRA / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize infra/k8s/overlays/{overlay} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if isinstance(d, dict)]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, _kustomize(request.param)


def _find(docs: list[dict], kind: str, name: str, namespace: str) -> dict:
    for d in docs:
        meta = d["metadata"]
        if d["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return d
    raise AssertionError(f"{kind} {namespace}/{name} not rendered")


def test_overlay_builds_with_mlflow_locked_down_and_no_secrets(rendered) -> None:
    overlay, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"], f"{overlay} renders a Secret"
    deployment = _find(docs, "Deployment", "mlflow", "headstart-mlflow")
    _check_mlflow_pod(deployment["spec"]["template"]["spec"])
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mlflow-config")
    )
    assert config["data"]["ARTIFACTS_DESTINATION"].startswith("s3://")
    assert _find(docs, "Service", "mlflow", "headstart-mlflow")["spec"]["ports"][0]["port"] == 5000
    if overlay == "onprem":
        _find(docs, "StatefulSet", "mlflow-postgres", "headstart-mlflow")
        _find(docs, "StatefulSet", "minio", "headstart-mlflow")


def test_overlay_network_policies_deny_by_default(rendered) -> None:
    _, docs = rendered
    deny = _find(docs, "NetworkPolicy", "default-deny-all", "headstart-mlflow")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    pipeline_deny = _find(docs, "NetworkPolicy", "headstart-pipeline-default-deny", "kubeflow")
    assert pipeline_deny["spec"]["podSelector"]["matchLabels"] == {"headstart.io/pipeline": "true"}
    assert set(pipeline_deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_pipeline_role_is_least_privilege_and_can_run_pytorchjobs(rendered) -> None:
    _, docs = rendered
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = _find(docs, "Role", "headstart-pipeline", "kubeflow")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule.get("resourceNames"), "secrets only by name"
    pytorchjobs = [
        r for r in role["rules"] if "kubeflow.org" in r["apiGroups"] and "pytorchjobs" in r["resources"]
    ]
    assert pytorchjobs and {"create", "get", "watch"} <= set(pytorchjobs[0]["verbs"])
    binding = _find(docs, "RoleBinding", "headstart-pipeline", "kubeflow")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "headstart-pipeline", "namespace": "kubeflow"}
    ]
