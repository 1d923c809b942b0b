"""Act on a gate decision record: move `champion` to the version, or record the rejection.

Kept apart from registration so the Kubeflow pipeline can branch on the decision (dsl.If) and so
the alias move comes after every write of the registration. The move happens under the registry lock,
only for a version whose registration completed, and only if the champion is still the one the
candidate was compared against; re-running it after the move was committed is a no-op.

A run judged against a champion (its record has an `alpha_run`) spent part of the gate's error budget,
promoted or not, so it is counted in the schedule state under the same lock (headstart.evaluation.gate explains the
budget); two pipelines counting at once both count, and a re-run counts once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.registry import model_registry as registry


@dataclass
class PromoteResult:
    version: str
    promoted: bool
    previous_champion: str | None
    reason: str
    schedule: dict[str, Any] | None = None  # the schedule state as recorded under the lock, if this run counted


def _spent(record: dict[str, Any]) -> tuple[float, int] | None:
    """(alpha_run, horizon_runs) of a run judged against a champion; None otherwise (first run, another
    label set, or a record from before the schedule)."""
    schedule = record.get("schedule") or {}
    if schedule.get("alpha_run") is None:
        return None
    horizon = (record.get("thresholds") or {}).get("horizon_runs") or schedule["after"]["horizon_runs"]
    return float(schedule["alpha_run"]), int(horizon)


def run(decision_file: Path, tracking: TrackingConfig) -> PromoteResult:
    """Promote when the record says so; otherwise tag the version rejected. The champion moves only here."""
    if not decision_file.is_file():
        raise RegistryError(f"{decision_file}: decision record not found; run `headstart register` first")
    record = json.loads(decision_file.read_text())
    version, promote = str(record["version"]), record["decision"] == "promoted"
    reason = record.get("summary") or record["decision"]
    spent = _spent(record)
    if not promote:
        state = None
        if spent is not None:
            with registry.lock(tracking):
                state = asdict(registry.count_run(tracking, version, *spent))
        registry.set_version_tags(tracking, version, {"decision": "rejected", "decision_reason": reason[:250]})
        return PromoteResult(version, False, None, reason, state)
    registry.require_complete(tracking, version)
    compared = record.get("champion_version")
    with registry.lock(tracking):  # taking it finishes any committed but unrecorded move, this one's included
        state = asdict(registry.count_run(tracking, version, *spent)) if spent is not None else None
        current = registry.champion(tracking)
        now = current.version if current else None
        if now == version:  # a re-run after this very promotion was committed
            return PromoteResult(version, True, compared, reason, state)
        if now != (str(compared) if compared is not None else None):
            reason = (f"rejected: the champion moved to v{now} while this run compared against "
                      f"v{compared}; re-run to compare against the new champion")
            registry.set_version_tags(tracking, version, {"decision": "rejected", "decision_reason": reason})
            return PromoteResult(version, False, None, reason, state)
        previous = registry.move_champion(tracking, version, "promote", reason)  # tags it promoted once moved
    return PromoteResult(version, True, previous, reason, state)
