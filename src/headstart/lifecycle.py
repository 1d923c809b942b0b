"""The champion's lifecycle beyond the gate: manual override, rollback, and status.

Every alias move goes through the registry lock and is appended to the champion history with
who did it and why.
"""

from __future__ import annotations

from typing import Any

from headstart import registry
from headstart.config import TrackingConfig
from headstart.errors import ConfigError, RegistryError


def _version_exists(tracking: TrackingConfig, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        registry.client(tracking).get_model_version(tracking.registered_model, version)
    except MlflowException as exc:
        raise RegistryError(f"{tracking.registered_model} v{version} does not exist ({exc.message})") from exc


def override(tracking: TrackingConfig, version: str, reason: str) -> str | None:
    """Move `champion` to `version` even if its gate failed; a reason is required and recorded."""
    if not reason.strip():
        raise ConfigError("--reason is required: say why the gate is being overridden")
    _version_exists(tracking, version)
    with registry.lock(tracking):
        previous = registry.move_champion(tracking, version, "override", reason)
        registry.set_version_tags(tracking, version,
                                  {"override_by": registry.current_user(), "override_reason": reason})
    return previous


def rollback(tracking: TrackingConfig, reason: str = "rollback") -> tuple[str, str]:
    """Move `champion` back to the version it replaced. Returns (from_version, to_version)."""
    with registry.lock(tracking):
        current = registry.champion(tracking)
        if current is None:
            raise RegistryError(f"{tracking.registered_model} has no champion to roll back")
        items = registry.history(tracking)
        made = next((h for h in reversed(items) if h["version"] == current.version), None)
        target = made.get("previous") if made else None
        if target is None:
            raise RegistryError(f"v{current.version} has no previous champion in the history; nothing to roll back to")
        registry.move_champion(tracking, target, "rollback", reason)
        before_target = next((h.get("previous") for h in reversed(items[:-1]) if h["version"] == target), None)
        registry.set_previous(tracking, before_target)
        registry.set_version_tags(tracking, current.version, {"rolled_back_by": registry.current_user(),
                                                              "rolled_back_reason": reason})
    return current.version, target


def status(tracking: TrackingConfig, rejected_limit: int = 5) -> dict[str, Any]:
    """Champion with metrics and data version, the promotion history, the latest rejected candidates."""
    c = registry.client(tracking)
    champ = registry.champion(tracking)
    rejected = []
    try:
        versions = c.search_model_versions(f"name='{tracking.registered_model}'")
    except Exception:  # noqa: BLE001 - nothing registered yet
        versions = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if mv.tags.get("decision") == "rejected" and len(rejected) < rejected_limit:
            rejected.append({"version": str(mv.version), "reason": mv.tags.get("decision_reason", "")})
    return {
        "model": tracking.registered_model,
        "champion": None if champ is None else {
            "version": champ.version,
            "metrics": {k: v for k, v in champ.tags.items() if k.startswith("metric.")},
            "data": champ.tags.get("data.dvc_md5"),
            "winner": champ.tags.get("headstart.winner"),
            "decision_reason": champ.tags.get("decision_reason") or champ.tags.get("override_reason"),
        },
        "history": registry.history(tracking),
        "rejected": rejected,
    }
