"""Typed, frozen configuration built from params.yaml plus `key.path=value` overrides.

Each step owns a pydantic model for its section; this module only loads, merges and
validates, so a bad value is reported with the parameter's dotted name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from headstart.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlflow/artifacts"

M = TypeVar("M", bound=BaseModel)


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class TrackingConfig(Frozen):
    """Where MLflow lives. Build it with `tracking_from_params` so `MLFLOW_TRACKING_URI` wins."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    experiment: str = "headstart"
    registered_model: str = "headstart-classifier"

    def resolved_uri(self) -> str:
        # Not re-read from the environment here: mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI
        # itself, so a later config in the same process would silently inherit the earlier store.
        return self.tracking_uri


def tracking_from_params(params: dict[str, Any]) -> TrackingConfig:
    """The `tracking` section, with MLFLOW_TRACKING_URI from the environment taking precedence."""
    data = section(params, "tracking")
    if os.environ.get("MLFLOW_TRACKING_URI"):
        data["tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    return build(TrackingConfig, data, "tracking")


def load_params(path: Path | str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read params.yaml and apply `a.b.c=value` overrides (values parsed as YAML)."""
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


def build(model: type[M], data: dict[str, Any], where: str, origins: Mapping[str, str] | None = None) -> M:
    """Validate one section, naming the dotted parameter on error.

    When `data` merges several sections (train.shared under train.<role>), `origins` maps each key to
    the section it was read from, so an error names the key where the user wrote it; keys it does not
    list (a missing one, a check across fields) are named under `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            head = (origins or {}).get(str(err["loc"][0]), where) if err["loc"] else where
            loc = ".".join(str(p) for p in (head, *err["loc"]) if p != "")
            if err["type"] == "missing":
                lines.append(f"  {loc}: missing; params.yaml is where every knob is set")
            else:
                lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid parameters in params.yaml:\n" + "\n".join(lines)) from None
