"""One source of truth for training defaults, imports one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "headstart"


def _imports(module: Path) -> set[str]:
    """Every headstart module a file imports, at module level or inside functions and TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("headstart")}


def test_checkpoint_does_not_import_engine():
    """The arrow runs engine -> checkpoint -> trainstate; checkpoint.py never reaches back into engine."""
    assert "headstart.training.checkpoint" in _imports(SRC / "training" / "engine.py")
    assert not {n for n in _imports(SRC / "training" / "checkpoint.py") if n.startswith("headstart.training.engine")}
    shared_types = _imports(SRC / "training" / "trainstate.py")
    assert not {n for n in shared_types if n.startswith(("headstart.training.engine", "headstart.training.checkpoint"))}


def _params() -> dict:
    from headstart.config import load_params

    return load_params(SRC.parents[1] / "params.yaml")


def test_train_config_has_no_defaults_of_its_own():
    """params.yaml is the one place a training knob's default lives: TrainConfig, EngineConfig and
    params.yaml said 10/8/12 epochs, 3/3/12 patience, -/none/flip tta."""
    from headstart.training.recipe import TrainConfig

    with_default = {name for name, f in TrainConfig.model_fields.items() if not f.is_required()}
    assert with_default == {"threads"}  # how many CPU threads: not a knob of the recipe


def test_engine_config_has_no_defaults_for_any_knob_params_yaml_sets():
    import dataclasses

    from headstart.training.engine import EngineConfig

    knobs = set(_params()["train"]["shared"]) | set(_params()["train"]["finetune"])
    defaulted = {f.name for f in dataclasses.fields(EngineConfig)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    assert defaulted == {"eval_batch_size", "threads"}
    assert not defaulted & knobs


def test_params_yaml_sets_every_knob_and_the_engine_gets_exactly_those_values():
    import dataclasses

    from headstart.steps.train import config_from_params
    from headstart.training.recipe import TrainConfig

    params = _params()
    for role in ("finetune", "scratch"):
        cfg = config_from_params(params, role)  # builds: no knob is missing from params.yaml
        written = {**params["train"]["shared"], **params["train"][role]}
        assert set(TrainConfig.model_fields) - {"role", "threads"} == set(written)
        assert {k: getattr(cfg, k) for k in written} == written
        engine = cfg.engine()
        for field in dataclasses.fields(engine):
            if field.name in written:
                assert getattr(engine, field.name) == written[field.name], (role, field.name)
