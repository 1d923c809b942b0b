"""A bad dataset stops the whole loop before any training, and production is untouched.

Three kinds of bad data, one from each family of check: a file that does not decode, a split that leaks into
another, a label distribution that drifted. That every kind is caught, naming the file and the defect, is
tests/data/test_validation_corpus.py's job (it runs validation alone on all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from headstart import cli
from headstart.config import TrackingConfig
from headstart.registry import model_registry as registry
from tests.helpers import params_cfg

from .corpus import EXPECTED, corpus_config, make_variant

ROOT = Path(__file__).resolve().parents[2]
KINDS_THAT_STOP = ("truncated_png", "near_duplicate_resized", "label_drift")


def _params(root: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["validate"] = corpus_config(root).model_dump(mode="json")
    params["tracking"].update(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"))
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _with_champion(root: Path) -> TrackingConfig:
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                          registered_model=yaml.safe_load((ROOT / "params.yaml").read_text())["tracking"][
                          "registered_model"])
    c = registry.client(tracking)
    c.create_registered_model(tracking.registered_model)
    c.create_model_version(tracking.registered_model, str(root))
    registry.move_champion(tracking, "1", "test", "existing production model")
    return tracking


@pytest.mark.parametrize("kind", KINDS_THAT_STOP)
def test_bad_dataset_fails_validation_and_nothing_trains(kind: str, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_variant(kind, tmp_path)
    params = _params(tmp_path)
    tracking = _with_champion(tmp_path)
    out = tmp_path / "outputs"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--data", str(data), "--outputs", str(out), "--params", str(params)])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "validation failed" in err and "No training was started" in err
    assert EXPECTED[kind].check in err
    assert not (out / "finetune").exists() and not (out / "scratch").exists()
    c = registry.client(tracking)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`headstart.step` = 'train'")
    assert runs == []
    champ = registry.champion(tracking)
    assert champ is not None and champ.version == "1"
    assert [h["version"] for h in registry.history(tracking)] == ["1"]
