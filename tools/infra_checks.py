"""Static checks for tools/lint-infra.sh that no off-the-shelf linter does.

Runs in the lint venv (.venv-lint), whose `hcl2` module is checkov's fork of
python-hcl2; the main test suite (tests/unit/test_infra.py) parses the same files
with python-hcl2 itself and checks their values against params.yaml.

    python tools/infra_checks.py terraform-parse infra/terraform
    python tools/infra_checks.py no-secret-values FILE...
    python tools/infra_checks.py no-secrets-rendered FILE...
    python tools/infra_checks.py kustomize-v5
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def terraform_parse(root: str) -> list[str]:
    """Every .tf file under root parses as HCL2."""
    import hcl2

    errors = []
    files = sorted(Path(root).rglob("*.tf"))
    if not files:
        return [f"{root}: no .tf files found"]
    for path in files:
        try:
            with path.open() as fh:
                hcl2.load(fh)
        except Exception as exc:  # the parser raises lark errors of several types
            errors.append(f"{path}: does not parse as HCL2: {exc}")
        else:
            print(f"    parsed {path}")
    return errors


def _docs(paths: list[str]) -> list[tuple[str, dict]]:
    out = []
    for p in paths:
        for doc in yaml.safe_load_all(Path(p).read_text()):
            if isinstance(doc, dict):
                out.append((p, doc))
    return out


def no_secret_values(paths: list[str]) -> list[str]:
    """Secret templates name their keys and carry no value."""
    errors = []
    secrets = [(p, d) for p, d in _docs(paths) if d.get("kind") == "Secret"]
    if not secrets:
        return ["no Secret templates found"]
    for path, doc in secrets:
        name = doc.get("metadata", {}).get("name")
        for field in ("data", "stringData"):
            for key, value in (doc.get(field) or {}).items():
                if value not in (None, ""):
                    errors.append(
                        f"{path}: Secret {name} key {key} carries a value; templates keep keys only"
                    )
        print(f"    {path}: Secret {name}: keys only")
    return errors


def no_secrets_rendered(paths: list[str]) -> list[str]:
    """The overlays create no Secret, so applying them never overwrites real ones."""
    errors = []
    for path, doc in _docs(paths):
        if doc.get("kind") == "Secret":
            name = doc.get("metadata", {}).get("name")
            errors.append(
                f"{path}: renders Secret {name}; Secrets are created by hand from infra/k8s/secrets/"
            )
    return errors


def kustomize_v5() -> list[str]:
    """kubectl's built-in kustomize is v5 (the overlays use labels: and components)."""
    try:
        raw = subprocess.run(
            ["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return [f"kubectl version failed: {exc}"]
    version = json.loads(raw).get("kustomizeVersion", "")
    print(f"    kubectl {json.loads(raw)['clientVersion']['gitVersion']}, kustomize {version}")
    return [] if version.startswith("v5") else [f"kubectl's kustomize is {version or 'unknown'}, need v5"]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    checks = {
        "terraform-parse": lambda: terraform_parse(args[0]),
        "no-secret-values": lambda: no_secret_values(args),
        "no-secrets-rendered": lambda: no_secrets_rendered(args),
        "kustomize-v5": kustomize_v5,
    }
    if cmd not in checks:
        print(f"unknown check {cmd!r}; one of {', '.join(checks)}")
        return 2
    errors = checks[cmd]()
    for e in errors:
        print(f"    ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
