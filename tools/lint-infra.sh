#!/usr/bin/env bash
# Lint Headstart's infrastructure and container files, statically (no cluster, no
# Docker engine, no cloud account needed):
#   hadolint      docker/Dockerfile, docker/Dockerfile.cuda, infra/mlflow/Dockerfile
#   kustomize     every overlay in infra/k8s/overlays builds (kubectl's kustomize v5)
#   validate      the built manifests and the Secret templates pass
#                 kubernetes-validate --strict for Kubernetes $K8S_VERSION
#   secrets       templates carry keys only; overlays render no Secret
#   terraform     every .tf parses (HCL2); `terraform fmt -check` where terraform exists
#   checkov       infra/ and the Dockerfiles, skips listed with reasons in infra/.checkov.yaml
# Tools come from the separate lint venv (requirements-lint.txt): `make lint-infra`.
# Exits non-zero if any step failed, after running them all, and names the failures.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${LINT_VENV:-.venv-lint}"
K8S_VERSION="${K8S_VERSION:-1.33.0}"
OVERLAYS=(gke eks onprem)
DOCKERFILES=(docker/Dockerfile docker/Dockerfile.cuda infra/mlflow/Dockerfile)

BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT

failed=()

run_step() {
  local name="$1"
  shift
  echo "==> $name"
  if "$@"; then
    echo "    ok"
  else
    echo "    FAILED: $name"
    failed+=("$name")
  fi
}

missing=()
for tool in hadolint checkov kubernetes-validate python; do
  [[ -x "$VENV/bin/$tool" ]] || missing+=("$VENV/bin/$tool")
done
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl")
if ((${#missing[@]})); then
  echo "lint-infra: missing ${missing[*]}; run 'make lint-infra' (it creates $VENV from requirements-lint.txt)" >&2
  exit 2
fi
PY="$VENV/bin/python"

run_step "hadolint ${DOCKERFILES[*]}" "$VENV/bin/hadolint" "${DOCKERFILES[@]}"

run_step "kubectl kustomize is v5" "$PY" tools/infra_checks.py kustomize-v5

rendered=()
for overlay in "${OVERLAYS[@]}"; do
  out="$BUILD/$overlay.yaml"
  run_step "kustomize build infra/k8s/overlays/$overlay" \
    bash -c 'kubectl kustomize "$1" > "$2"' _ "infra/k8s/overlays/$overlay" "$out"
  [[ -s "$out" ]] && rendered+=("$out")
done

templates=(infra/k8s/secrets/*.yaml)
if ((${#rendered[@]})); then
  run_step "kubernetes-validate --strict (Kubernetes $K8S_VERSION): overlays and Secret templates" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${rendered[@]}" "${templates[@]}"
  run_step "overlays render no Secret" "$PY" tools/infra_checks.py no-secrets-rendered "${rendered[@]}"
fi
run_step "Secret templates carry keys only" "$PY" tools/infra_checks.py no-secret-values "${templates[@]}"

run_step "Terraform parses (HCL2)" "$PY" tools/infra_checks.py terraform-parse infra/terraform
if command -v terraform >/dev/null 2>&1; then
  run_step "terraform fmt -check" terraform fmt -check -recursive infra/terraform
else
  echo "==> terraform fmt -check: skipped (terraform not installed; the HCL2 parse above still ran)"
fi

# checkov's kustomize runner sometimes dies with BrokenPipe in its forked workers (seen on the first run of a
# fresh .venv-lint under load); sequential runners avoid it and cost a few seconds.
export CHECKOV_PARALLELIZATION_TYPE=none
run_step "checkov infra/" \
  "$VENV/bin/checkov" --config-file infra/.checkov.yaml --directory infra
run_step "checkov Dockerfiles" \
  "$VENV/bin/checkov" --config-file infra/.checkov.yaml --framework dockerfile secrets \
  $(printf -- '--file %s ' "${DOCKERFILES[@]:0:2}")

echo
if ((${#failed[@]})); then
  echo "lint-infra: ${#failed[@]} step(s) FAILED:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "lint-infra: all checks passed"
