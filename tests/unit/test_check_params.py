"""check_params: an unknown section or key anywhere gets "did you mean", a bad value pydantic's message, each
saying where it came from; keys are read from the config classes' source, so the check stays cheap.
The commands that call it are tested in test_cli_user_errors.py."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.config import SECTIONS, InvalidParams, check_params, class_keys, load_params

ROOT = Path(__file__).resolve().parents[2]


def test_a_typo_in_params_yaml_names_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("  alpha: 0.05", "  alpah: 0.05"))
    with pytest.raises(InvalidParams, match=rf"gate.alpah: unknown key; did you mean gate.alpha\? \(from {params}\)"):
        load_params(params)


def test_run_checks_every_sections_values_from_params_yaml(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("  min_accuracy: 0.80", "  min_accuracy: 2"))
    load_params(params)  # keys are fine: a command that does not read `gate` goes on
    with pytest.raises(InvalidParams, match=r"gate.min_accuracy: Input should be less than or equal to 1"):
        load_params(params, full=True)


def test_pipeline_overrides_are_checked_and_named_as_such():
    from headstart.kfp import kfp_io

    params_json = __import__("json").dumps(load_params(ROOT / "params.yaml"))
    with pytest.raises(InvalidParams, match=r"from the run's overrides parameter gate\.max_regresion=0"):
        kfp_io.validate_params(params_json, ["gate.max_regresion=0"])


def test_an_unknown_key_under_a_known_one_is_found_at_any_depth():
    with pytest.raises(InvalidParams, match=r"validate.severity.decod: unknown key; did you mean "
                                            r"validate.severity.decode\?"):
        check_params({"validate": {"severity": {"decod": "warn"}}})
    with pytest.raises(InvalidParams, match=r"train.shared: expected a section of keys, got 3"):
        check_params({"train": {"shared": 3}})


@pytest.mark.parametrize("ref", sorted(set(SECTIONS.values())))
def test_keys_read_from_source_are_the_classes_fields(ref):
    module, name = ref.split(":")
    cls = getattr(importlib.import_module(module), name)
    keys = class_keys(ref)
    assert {k for k in keys if k != "*"} == set(cls.model_fields)
    assert ("*" in keys) == (cls.model_config.get("extra") != "forbid")


def test_checking_keys_imports_no_step(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    code = ("import sys; from headstart.config import load_params; load_params(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "params.yaml")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
