"""params.yaml holds each knob's one default: no config class repeats (or contradicts) a value params.yaml sets,
every section builds from params.yaml alone, and a key missing there is named, with params.yaml, in the error."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest
from pydantic import BaseModel

from headstart.config import SECTIONS, InvalidParams, config_for, section
from tests.helpers import repo_params

# Fields a class may default because params.yaml does not set them: not knobs of a run.
NOT_IN_PARAMS = {"headstart.training.recipe:TrainConfig": {"role", "threads"}}
OPEN_CLASSES = {"headstart.kfp.settings:PipelineSettings"}  # compile-time settings: params.yaml sets a few
BUILT = ["data", "tracking", "fetch", "validate", "train.finetune", "train.scratch", "evaluate", "gate", "register",
         "pipeline"]


def _cls(ref: str) -> type[BaseModel]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _defaulted(cls: type[BaseModel], written: dict[str, Any], prefix: str = "") -> list[str]:
    """Fields of `cls` (and of its nested classes) that have a default although params.yaml writes them."""
    found = []
    for key, value in written.items():
        field = cls.model_fields.get(key)
        if field is None:
            continue
        if not field.is_required():
            found.append(f"{prefix}{key} (default {field.get_default(call_default_factory=True)!r})")
        nested = field.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            found += _defaulted(nested, value, f"{prefix}{key}.")
    return found


@pytest.mark.parametrize("dotted", sorted(SECTIONS))
def test_no_class_has_a_default_for_a_key_params_yaml_sets(dotted):
    """A default in code beside params.yaml's is a second source of truth: they drifted before (validate's
    min_images_per_class was 1 in code and 100 in params.yaml; train's epochs 10, 8 and 12)."""
    assert _defaulted(_cls(SECTIONS[dotted]), section(repo_params(), dotted)) == []


@pytest.mark.parametrize("ref", sorted(set(SECTIONS.values()) - OPEN_CLASSES))
def test_every_default_a_class_keeps_is_for_a_field_that_is_not_a_knob(ref):
    cls = _cls(ref)
    assert {n for n, f in cls.model_fields.items() if not f.is_required()} <= NOT_IN_PARAMS.get(ref, set())


@pytest.mark.parametrize("name", BUILT)
def test_every_section_builds_from_params_yaml_alone_with_its_values(name, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = repo_params()
    cfg = config_for(params, name)
    written = section(params, name) | (section(params, "train.shared") | section(params, name)
                                       if name.startswith("train.") else {})
    dumped = cfg.model_dump(mode="json")
    assert {k: dumped[k] for k in written} == written


@pytest.mark.parametrize(("name", "path"), [
    ("data", ("data", "dir")), ("tracking", ("tracking", "experiment")), ("fetch", ("fetch", "repo")),
    ("validate", ("validate", "min_width")), ("validate", ("validate", "severity", "shards")),
    ("train.finetune", ("train", "shared", "epochs")), ("train.scratch", ("train", "scratch", "backbone")),
    ("evaluate", ("evaluate", "batch_size")), ("gate", ("gate", "alpha")),
    ("register", ("register", "description")), ("pipeline", ("pipeline", "gpu_toleration_key")),
])
def test_a_key_missing_from_params_yaml_is_named_with_params_yaml(name, path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = copy.deepcopy(repo_params())
    node = params
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    where = name if name.startswith("train.") else ".".join(path[:-1])
    with pytest.raises(InvalidParams, match=rf"{where}\.{path[-1]}: missing; params\.yaml is where every knob is set"):
        config_for(params, name)
