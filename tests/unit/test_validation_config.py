"""ValidateConfig: its values are params.yaml's; a change replaces only what it names; mistakes name the parameter."""

from __future__ import annotations

import pytest

from headstart.errors import ConfigError
from tests.helpers import params_cfg, repo_params


def test_params_yaml_s_section_builds_complete_and_frozen() -> None:
    cfg = params_cfg("validate")
    assert list(cfg.splits) == repo_params()["validate"]["splits"]
    assert cfg.severity.model_dump() == repo_params()["validate"]["severity"]
    with pytest.raises(ValueError):
        cfg.workers = 3  # type: ignore[misc]


def test_a_severity_change_keeps_the_other_severities() -> None:
    cfg = params_cfg("validate", label_set=["a", "b"], severity={"label_drift": "warn"})
    assert cfg.label_set == ("a", "b") and cfg.severity.label_drift == "warn"
    assert cfg.severity.decode == repo_params()["validate"]["severity"]["decode"]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"severity": {"decod": "fail"}}, "validate.severity.decod"),
        ({"severity": {"decode": "ignore"}}, "validate.severity.decode"),
        ({"min_width": 64, "max_width": 32}, "min_width (64) is above max_width"),
        ({"label_set": ["a", "a"]}, "label_set lists a value twice"),
        ({"near_duplicate_max_hamming": 65}, "validate.near_duplicate_max_hamming"),
    ],
)
def test_bad_values_name_the_parameter(data: dict, where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace("(", r"\(").replace(")", r"\)")):
        params_cfg("validate", **data)
