"""Act on a gate decision record: move `champion` to the version, or record the rejection.

Kept apart from registration so the Kubeflow pipeline can branch on the decision (dsl.If) and so
the alias move comes after every write of the registration. The move happens under the registry lock,
only for a version whose registration completed, and only if the champion is still the one the
candidate was compared against; re-running it after the move was committed is a no-op.
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
    reason = record.get("summary") or record["decision"]
    if not promote:
        registry.set_version_tags(tracking, version, {"decision": "rejected", "decision_reason": reason[:250]})
        return PromoteResult(version=version, promoted=False, previous_champion=None, reason=reason)
    registry.require_complete(tracking, version)
    compared = record.get("champion_version")
    with registry.lock(tracking):  # taking it finishes any committed but unrecorded move, this one's included
        current = registry.champion(tracking)
        now = current.version if current else None
        if now == version:  # a re-run after this very promotion was committed
            return PromoteResult(version=version, promoted=True, previous_champion=compared, reason=reason)
        if now != (str(compared) if compared is not None else None):
            reason = (f"rejected: the champion moved to v{now} while this run compared against "
                      f"v{compared}; re-run to compare against the new champion")
            registry.set_version_tags(tracking, version, {"decision": "rejected", "decision_reason": reason})
            return PromoteResult(version=version, promoted=False, previous_champion=None, reason=reason)
        previous = registry.move_champion(tracking, version, "promote", reason)  # tags it promoted once moved
    return PromoteResult(version=version, promoted=True, previous_champion=previous, reason=reason)
