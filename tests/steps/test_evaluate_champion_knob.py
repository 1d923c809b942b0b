"""evaluate always scores the current champion: `evaluate.include_champion: false` made every register
fail once a champion existed ("champion changed since evaluation (evaluated vNone, now v3)"), which
re-running evaluate could not fix. The knob is gone, and a params file that still sets it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.config import load_params
from headstart.errors import ConfigError
from headstart.steps import evaluate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["false", "true"])
def test_setting_include_champion_is_refused_naming_the_key(value: str):
    with pytest.raises(ConfigError, match=r"evaluate\.include_champion: no longer exists.*Delete the key \(from --set"):
        load_params(ROOT / "params.yaml", [f"evaluate.include_champion={value}"])


def test_the_project_params_no_longer_set_it():
    params = load_params(ROOT / "params.yaml")
    assert "include_champion" not in params["evaluate"]
    evaluate.config_from_params(params)
