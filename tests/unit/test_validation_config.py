"""ValidateConfig: defaults are the params.yaml values; mistakes name the parameter."""

from __future__ import annotations

import pytest

from headstart.config import build
from headstart.errors import ConfigError
from headstart.validation.config import ValidateConfig


def test_defaults_are_complete_and_frozen() -> None:
    cfg = ValidateConfig()
    assert cfg.splits == ("train", "val", "test") and cfg.label_set is None
    assert cfg.severity.duplicates_within_split == "warn" and cfg.severity.decode == "fail"
    with pytest.raises(ValueError):
        cfg.workers = 3  # type: ignore[misc]


def test_params_section_builds() -> None:
    cfg = build(ValidateConfig, {"label_set": ["a", "b"], "severity": {"label_drift": "warn"}}, "validate")
    assert cfg.label_set == ("a", "b") and cfg.severity.label_drift == "warn"


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
        build(ValidateConfig, data, "validate")
