"""Typed, frozen configuration built from params.yaml plus `key.path=value` overrides.

Each step owns a pydantic model for its section; this module only loads, merges and
validates, so a bad value is reported with the parameter's dotted name. No class gives a default to a
key params.yaml sets: params.yaml is the one default of every knob, and code that has no params.yaml at
hand (a KFP component) is given its content (params_json); tests build from the repository's own.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headstart.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

M = TypeVar("M", bound=BaseModel)


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class TrackingConfig(Frozen):
    """Where MLflow lives. Build it with `tracking_from_params` so `MLFLOW_TRACKING_URI` wins."""

    tracking_uri: str
    artifact_root: str
    experiment: str
    registered_model: str

    def resolved_uri(self) -> str:
        # Not re-read from the environment here: mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI
        # itself, so a later config in the same process would silently inherit the earlier store.
        return self.tracking_uri


class DataConfig(Frozen):
    """The `data` section: the dataset folder (fetch's default path) and the importer's val split."""

    dir: str
    val_per_class: int = Field(ge=1)


def tracking_from_params(params: dict[str, Any], **changes: Any) -> TrackingConfig:
    """The `tracking` section, with MLFLOW_TRACKING_URI from the environment taking precedence (and
    `changes`, for tests, over both)."""
    env = {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"]} if os.environ.get("MLFLOW_TRACKING_URI") else {}
    return from_section(TrackingConfig, params, "tracking", **{**env, **changes})


def load_params(path: Path | str = DEFAULT_PARAMS, overrides: list[str] | None = None, *,
                full: bool = False) -> dict[str, Any]:
    """Read params.yaml, apply `a.b.c=value` overrides (values parsed as YAML) and check the result with
    `check_params`, so a typo anywhere stops every command, not only the one that reads its section."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found. Run from the project root or pass --params.")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides or []:
        apply_override(params, item)
    check_params(params, overrides, str(path), full=full)
    return params


def apply_override(params: dict[str, Any], item: str) -> None:
    """Set one `dotted.key=value` override in place."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example train.shared.epochs=3")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r}: empty key")
    node = params
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc


def section(params: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Return params[a][b]... for `a.b`, or {} when absent."""
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return dict(node) if isinstance(node, dict) else {}


class InvalidParams(ConfigError):
    """Bad parameters; `problems` pairs each dotted name with what is wrong, for `check_params` to attribute."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "params.yaml") -> None:
        self.problems = problems
        lines = [f"{name}: {what}" for name, what in problems]
        super().__init__(f"invalid parameter {lines[0]}" if len(lines) == 1 else
                         f"{len(lines)} invalid parameters in {source}:\n  " + "\n  ".join(lines))


def build(model: type[M], data: dict[str, Any], where: str, origins: Mapping[str, str] | None = None) -> M:
    """Validate one section, naming the dotted parameter on error.

    When `data` merges several sections (train.shared under train.<role>), `origins` maps each key to
    the section it was read from, so an error names the key where the user wrote it; keys it does not
    list (a missing one, a check across fields) are named under `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            head = (origins or {}).get(str(err["loc"][0]), where) if err["loc"] else where
            loc = ".".join(str(p) for p in (head, *err["loc"]) if p != "")
            if err["type"] == "missing":
                problems.append((loc, "missing; params.yaml is where every knob is set"))
            else:
                problems.append((loc, f"{err['msg']} (got {err.get('input')!r})"))
        raise InvalidParams(problems) from None


def from_section(model: type[M], params: dict[str, Any], name: str, **changes: Any) -> M:
    """Section `name` of `params` as `model`, with `changes` (tests, benchmarks) applied last; a change to a
    nested section (validate.severity) replaces only the keys it gives. An error names the key."""
    data = section(params, name)
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return build(model, data, name)


# Where each section's keys are declared. The check reads these classes' source rather than importing them:
# importing the training step costs seconds (torch), and `status` should not pay that to spot a typo.
SECTIONS = {
    "data": "headstart.config:DataConfig",
    "tracking": "headstart.config:TrackingConfig",
    "fetch": "headstart.steps.fetch:FetchConfig",
    "validate": "headstart.validation.config:ValidateConfig",
    "train.shared": "headstart.training.recipe:TrainConfig",
    "train.finetune": "headstart.training.recipe:TrainConfig",
    "train.scratch": "headstart.training.recipe:TrainConfig",
    "evaluate": "headstart.steps.evaluate:EvaluateConfig",
    "gate": "headstart.evaluation.gate:GateThresholds",
    "register": "headstart.steps.register:RegisterConfig",
    "pipeline": "headstart.kfp.settings:PipelineSettings",
}
NOT_KNOBS = {"train": {"role"}}  # fields a section's class has but params.yaml does not set
# Each section's builder, where it does more than `from_section` (route keys, read the environment): what a
# step's driver calls, `check_params` checks with, and `config_for` (the tests' and benchmarks' way) calls.
BUILDERS = {
    "tracking": "headstart.config:tracking_from_params",
    "fetch": "headstart.steps.fetch:config_from_params",
    "validate": "headstart.validation.config:config_from_params",
    "train.finetune": "headstart.steps.train:config_from_params",
    "train.scratch": "headstart.steps.train:config_from_params",
    "evaluate": "headstart.steps.evaluate:config_from_params",
    "gate": "headstart.evaluation.gate:thresholds_from_params",
    "register": "headstart.steps.register:config_from_params",
    "pipeline": "headstart.kfp.settings:settings_from_params",
}
OPEN = "*"  # in a schema: a class that ignores keys it does not know (extra != "forbid")


@cache
def class_keys(ref: str) -> dict[str, Any]:
    """The keys of the pydantic class `module:Class`, read from its source: {name: None, or a nested class's
    keys}, with OPEN when the class does not forbid unknown keys. tests/unit/test_check_params.py holds this
    to the imported classes' model_fields."""
    module, name = ref.split(":")
    spec = Path(__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    classes = {n.name: n for n in ast.walk(ast.parse(spec.read_text())) if isinstance(n, ast.ClassDef)}

    def keys(node: ast.ClassDef) -> dict[str, Any]:
        out: dict[str, Any] = {}
        extra = "forbid" if any(getattr(b, "id", "") == "Frozen" for b in node.bases) else None
        for base in node.bases:
            if getattr(base, "id", "") in classes:  # a base in the same module: its keys and its `extra`
                inherited = keys(classes[base.id])
                extra = extra if OPEN in inherited else "forbid"
                out.update({k: v for k, v in inherited.items() if k != OPEN})
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                nested = getattr(stmt.annotation, "id", "")
                out[stmt.target.id] = keys(classes[nested]) if nested in classes else None
            elif isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "model_config" for t in stmt.targets):
                extra = next((k.value.value for k in getattr(stmt.value, "keywords", [])
                              if k.arg == "extra" and isinstance(k.value, ast.Constant)), extra)
        if extra != "forbid":
            out[OPEN] = None
        return out

    return keys(classes[name])


def _schema() -> dict[str, Any]:
    """params.yaml's shape: sections (nested dicts) down to each class's keys; `seed` is a top-level value."""
    tree: dict[str, Any] = {"seed": None}
    for dotted, ref in SECTIONS.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = {k: v for k, v in class_keys(ref).items() if k not in NOT_KNOBS.get(dotted.split(".")[0], ())}
    return tree


# Keys that once existed, with what a params file that still sets them should do instead.
REMOVED = {"evaluate.include_champion": "no longer exists: evaluate always scores the current champion, since "
                                        "register gates the candidate against it (with false, register refused "
                                        "every run once a champion existed). Delete the key"}


def _unknown(node: Any, schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    if not isinstance(node, dict):
        return [(prefix.rstrip("."), f"expected a section of keys, got {node!r}")]
    problems = []
    for key, value in node.items():
        if key in schema:
            if isinstance(schema[key], dict):
                problems += _unknown(value, schema[key], f"{prefix}{key}.")
        elif f"{prefix}{key}" in REMOVED:
            problems.append((f"{prefix}{key}", REMOVED[f"{prefix}{key}"]))
        elif OPEN not in schema:
            known = [k for k in schema if k != OPEN]
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(known)}"
            problems.append((f"{prefix}{key}", f"unknown {'key' if prefix else 'section'}{hint}"))
    return problems


def config_for(params: dict[str, Any], name: str, **changes: Any) -> Any:
    """Section `name`'s config (`train.finetune`, `gate`, ...) built from `params` by the builder its step
    uses, importing it only now, with `changes` applied last: how a test or a benchmark gets a config, so it
    sees params.yaml's values as a run does."""
    module, func = BUILDERS.get(name, SECTIONS[name]).split(":")
    builder = getattr(importlib.import_module(module), func)
    if name in BUILDERS:
        return builder(params, name.split(".")[1], **changes) if name.startswith("train.") else \
            builder(params, **changes)
    return from_section(builder, params, name, **changes)


def check_params(params: dict[str, Any], overrides: list[str] | None = None, source: str = "params.yaml", *,
                 full: bool = False, set_label: str = "--set") -> None:
    """Reject an unknown section or key anywhere (with "did you mean"), and a bad value in every section an
    override touches (`full`: in every section), naming where each came from: `set_label` or `source`.

    Every command calls it, so `validate --set train.shared.epoch=2` fails at once instead of being ignored,
    and `run` (full) finds a bad gate threshold before training. Keys are checked from the classes' source,
    in milliseconds; values by importing the section's class, only where asked."""
    given = {item.split("=", 1)[0].strip(): item for item in overrides or []}
    problems = _unknown(params, _schema())
    for name in [] if problems else sorted(set(params) if full else {key.split(".")[0] for key in given}):
        try:  # build the config as its step will, its class imported only now (by name: no import of training here)
            for key in ("train.finetune", "train.scratch") if name == "train" else (name,):
                if key in SECTIONS:
                    config_for(params, key)
        except InvalidParams as exc:
            problems += exc.problems
        except ConfigError as exc:
            problems.append((name, str(exc)))

    def origin(name: str) -> str:
        items = [item for key, item in given.items() if key == name or key.startswith(f"{name}.")
                 or name.startswith(f"{key}.")]
        return f"{set_label} {items[0]}" if items else source

    if problems:
        raise InvalidParams([(name, f"{what} (from {origin(name)})") for name, what in problems], source)
