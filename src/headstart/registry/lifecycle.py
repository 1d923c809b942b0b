"""The champion's lifecycle beyond the gate: manual override, rollback, and status.

Every alias move goes through the registry lock and is appended to the champion history with
who did it and why. A person's move (override, rollback) also opens a fresh window of the gate's
schedule, recording the reason: the gate's error budget covers the runs it judged on its own since the
last time a person took the decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from headstart.config import TrackingConfig
from headstart.errors import ConfigError, RegistryError
from headstart.registry import model_registry as registry
from headstart.registry.lock import NOT_FOUND


def override(tracking: TrackingConfig, version: str, reason: str) -> str | None:
    """Move `champion` to `version` even if its gate failed; a reason is required and recorded."""
    if not reason.strip():
        raise ConfigError("--reason is required: say why the gate is being overridden")
    c, name = registry.client(tracking), tracking.registered_model
    try:
        registry.retry(f"reading {name} v{version}", lambda: c.get_model_version(name, version))
    except RegistryError as exc:
        if registry.error_code(exc) in NOT_FOUND:
            raise RegistryError(f"{name} v{version} does not exist ({exc})") from exc
        raise
    with registry.lock(tracking):
        previous = registry.move_champion(tracking, version, "override", reason)
        registry.set_version_tags(tracking, version,
                                  {"override_by": registry.current_user(), "override_reason": reason})
        registry.reset_schedule(tracking, f"manual promotion of v{version} by {registry.current_user()}: {reason}")
    return previous


def rollback(tracking: TrackingConfig, reason: str = "rollback") -> tuple[str, str]:
    """Move `champion` back to the version it replaced, and further back on each further rollback (the
    history is a stack of promotions; see headstart.registry.model_registry). Returns (from_version, to_version)."""
    with registry.lock(tracking):
        current = registry.champion(tracking)
        if current is None:
            raise RegistryError(f"{tracking.registered_model} has no champion to roll back")
        plan = registry.rollback_plan(registry.history(tracking), current.version)
        if plan is None:
            raise RegistryError(f"v{current.version} has no previous champion in the history; nothing to roll back to")
        target, below = plan
        registry.move_champion(tracking, target, "rollback", reason, rollback=below)
        registry.set_version_tags(tracking, current.version, {"rolled_back_by": registry.current_user(),
                                                              "rolled_back_reason": reason})
        registry.reset_schedule(tracking, f"rollback from v{current.version} to v{target} by "
                                          f"{registry.current_user()}: {reason}")
    return current.version, target


def status(tracking: TrackingConfig) -> dict[str, Any]:
    """Champion with metrics and data version, the promotion history, the latest five rejected candidates.

    `registered` is False when the model does not exist on the server (nothing registered yet); a server
    that cannot be reached, or that fails, raises RegistryError naming the tracking URI instead."""
    require_store(tracking)
    registry.check_reachable(tracking)
    uri = tracking.resolved_uri()
    c = registry.client(tracking, read_only=True)  # no experiment or artifact folder is created
    name = tracking.registered_model
    info: dict[str, Any] = {"model": name, "tracking_uri": uri, "registered": False, "champion": None,
                            "history": [], "rejected": [], "gate_schedule": None}
    if not registry.exists(f"reading {name!r} at {uri}", lambda: c.get_registered_model(name)):
        return info
    champ = registry.champion(tracking)
    versions = registry.retry(f"listing the versions of {name!r} at {uri}",
                              lambda: c.search_model_versions(f"name='{name}'"))
    rejected = [{"version": str(mv.version), "reason": mv.tags.get("decision_reason", "")}
                for mv in sorted(versions, key=lambda v: int(v.version), reverse=True)
                if mv.tags.get("decision") == "rejected"][:5]
    info.update(registered=True, history=registry.history(tracking), rejected=rejected,
                gate_schedule=_schedule(tracking))
    if champ is not None:
        info["champion"] = {
            "version": champ.version,
            "metrics": {k: v for k, v in champ.tags.items() if k.startswith("metric.")},
            "data": champ.tags.get("data.dvc_md5"),
            "winner": champ.tags.get("headstart.winner"),
            "decision_reason": champ.tags.get("decision_reason") or champ.tags.get("override_reason"),
        }
    return info


def local_store(uri: str) -> Path | None:
    """The file or folder a local tracking URI names (sqlite:///, file://, a bare path); None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///").split("?")[0])
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return None if "://" in uri or ":" in uri.split("/")[0] else Path(uri)


def require_store(tracking: TrackingConfig) -> None:
    """A read-only command must not write: MLflow creates a missing sqlite file or folder (and an artifact
    root) on first touch, so a mistyped path would make a new, empty store and report "not registered"."""
    path = local_store(tracking.resolved_uri())
    if path is not None and not path.exists():
        raise ConfigError(f"tracking.tracking_uri {tracking.resolved_uri()}: no MLflow store at {path}, and a "
                          "read-only command creates none. Check the path (or MLFLOW_TRACKING_URI), or run the "
                          "loop first (`make run`).")


def _schedule(tracking: TrackingConfig) -> dict[str, Any]:
    """The gate's schedule state for status; a corrupt one is shown with its error, not raised."""
    from dataclasses import asdict

    from headstart.evaluation.gate import ScheduleState

    text = registry.schedule_text(tracking)  # a failing server raises here
    try:
        return asdict(ScheduleState.from_json(text, tracking.registered_model))
    except RegistryError as exc:
        return {"error": str(exc)}
