"""Act on a gate decision record: move `champion` to the version, or record the rejection.

Kept apart from registration so the Kubeflow pipeline can branch on the decision (dsl.If) and so
the alias move is the last write of a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from headstart import registry
from headstart.config import TrackingConfig
from headstart.errors import RegistryError


@dataclass
class PromoteResult:
    version: str
    promoted: bool
    previous_champion: str | None
    reason: str


def run(decision_file: Path, tracking: TrackingConfig) -> PromoteResult:
    """Promote when the record says so; otherwise tag the version rejected. The champion moves only here."""
    if not decision_file.is_file():
        raise RegistryError(f"{decision_file}: decision record not found; run `headstart register` first")
    record = json.loads(decision_file.read_text())
    version, promote = str(record["version"]), record["decision"] == "promoted"
    reason = record.get("summary") or "; ".join(record.get("reasons", [])) or record["decision"]
    registry.set_version_tags(tracking, version, {"decision": record["decision"], "decision_reason": reason[:250]})
    previous = registry.move_champion(tracking, version, "promote", reason) if promote else None
    return PromoteResult(version=version, promoted=promote, previous_champion=previous, reason=reason)
