"""Register the winner, run the gate, and promote it only when every check passes.

Order matters for "nothing is half done" (see headstart.registry.model_registry): the model is logged, then the version
is created in one request with all its tags and marked pending; the serving check and the decision record
follow, then the version is marked complete, the last write before promotion moves the champion alias.
A run that fails before that leaves the champion unchanged and at most a pending version, which nothing
uses; the next run registers a new version.

The gate's schedule state (headstart.evaluation.gate.ScheduleState) is read from the registry before anything is
registered, so a corrupt one stops the run with nothing written; the run is counted in it later, under
the registry lock, by headstart.steps.promote.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from headstart.config import Frozen, TrackingConfig, from_section
from headstart.evaluation import eval_folder, report
from headstart.evaluation.gate import Decision, GateThresholds, choose_winner, decide, thresholds_from_params
from headstart.models import modelio
from headstart.registry import decision_record, lineage, logged_model
from headstart.registry import model_registry as registry
from headstart.serving import verify


class RegisterConfig(Frozen):
    """The `register` section of params.yaml, which holds each knob's one default (none here)."""

    serving_check_images: int = Field(ge=1)  # drawn round-robin over the classes
    serving_check_timeout_s: float = Field(gt=0)  # the fresh process loading and predicting
    description: str  # the registered model's, set when register creates it


def config_from_params(params: dict[str, Any], **changes: Any) -> RegisterConfig:
    """The `register` section; `changes`, for tests and benchmarks, apply last."""
    return from_section(RegisterConfig, params, "register", **changes)


def configs_from_params(params: dict[str, Any]) -> tuple[RegisterConfig, GateThresholds]:
    """What register reads: its own section and the gate's."""
    return config_from_params(params), thresholds_from_params(params)


@dataclass
class RegisterResult:
    model_name: str
    version: str
    winner: str
    promoted: bool
    alias: str | None
    previous_champion: str | None
    decision: dict[str, Any]


def run(cfg: RegisterConfig, thresholds: GateThresholds, data_dir: Path, candidates: dict[str, Path],
        eval_dir: Path, out_dir: Path, tracking: TrackingConfig, promote: bool = True,
        data_version: dict[str, str] | None = None) -> RegisterResult:
    """Pick the winner, register it, decide, check serving, then promote or record the rejection.

    With promote=False the alias is left alone and the caller runs headstart.steps.promote on the
    decision record (the Kubeflow pipeline does this inside a dsl.If on the decision). `data_version`
    (lineage tags) replaces what this working copy says (lineage.lineage(data_dir)), e.g. in a pod.
    """
    metrics = eval_folder.metrics(eval_dir)
    evaluated_champion = metrics.get("champion_version")
    winner, decision = _decide(thresholds, eval_dir, tracking, evaluated_champion)
    card = modelio.load_card(candidates[winner])
    staged = tempfile.TemporaryDirectory(prefix="headstart-serving-")  # removed below, or when `run` ends
    paths, expected = verify.sample(eval_dir, data_dir, winner, candidates[winner], card.classes,
                                    cfg.serving_check_images, Path(staged.name))
    data_tags = {**lineage.lineage(data_dir), **(data_version or {})}
    tags = lineage.version_tags(data_tags, winner, {r: modelio.load_card(candidates[r]).run_id
                                                    for r in ("finetune", "scratch")},
                                decision.pretraining_paid, metrics["models"], card.arch, card.preset.image_size)
    model_uri, run_id, experiment_id = logged_model.log_model(
        tracking, candidates[winner], card.run_id, paths, data_dir, lineage.data_only(data_tags),
        {**decision_record.gate_numbers(decision.to_dict()), **logged_model.model_numbers(metrics["models"])})
    version = registry.create_version(tracking, model_uri, tags)
    failure = verify.failure(tracking, version, paths, expected, cfg.serving_check_timeout_s)
    staged.cleanup()
    decision = replace(verify.with_serving(decision, failure), candidate_version=version)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = decision_record.mlflow_refs(tracking.resolved_uri(), experiment_id, run_id, tracking.registered_model,
                                       version)
    record = decision_record.complete(
        {**decision.to_dict(), "model_name": tracking.registered_model, "version": version, "winner": winner,
         "champion_version": evaluated_champion}, version, data_tags, refs)
    history = report.version_history(tracking, current=version)
    decision_record.write(out_dir, eval_dir, decision, record, history)
    logged_model.log_decision(tracking, version, run_id, out_dir)
    registry.describe(tracking, version, decision_record.version_description(record, metrics["models"]),
                      decision_record.model_description(cfg.description, card.arch, card.preset.image_size,
                                                         list(card.classes)))
    registry.mark_complete(tracking, version)
    previous, promoted = _promote(out_dir, eval_dir, tracking, decision, record, history) if promote else (None, False)
    result = RegisterResult(model_name=tracking.registered_model, version=version, winner=winner,
                            promoted=promoted, alias=registry.CHAMPION if promoted else None,
                            previous_champion=previous, decision=record)
    (out_dir / "registration.json").write_text(json.dumps(asdict(result), indent=2, sort_keys=True) + "\n")
    return result


def _decide(thresholds: GateThresholds, eval_dir: Path, tracking: TrackingConfig,
            evaluated_champion: str | None) -> tuple[str, Decision]:
    """The winner's name and the gate's decision, from the evaluation and the registry, before anything is
    written: a champion that moved since evaluation, or a corrupt schedule state, stops the run here."""
    finetune, scratch = eval_folder.candidates_for_gate(eval_dir)
    registry.repair(tracking)  # record a champion move that a killed run committed but did not finish
    current = registry.champion(tracking)
    eval_folder.require_champion(evaluated_champion, current.version if current else None)
    schedule = registry.read_schedule(tracking)  # corrupt: RegistryError before anything is registered
    champ = eval_folder.champion_for_gate(eval_dir, evaluated_champion)
    winner, _ = choose_winner(finetune, scratch)
    return winner.name, decide(winner, scratch, champ, thresholds, schedule=schedule)


def _promote(out_dir: Path, eval_dir: Path, tracking: TrackingConfig, decision: Decision, record: dict[str, Any],
             history: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """headstart.steps.promote on the decision just written; (previous champion, promoted). The record (and
    its pages) are written again when promotion changed what they say."""
    from headstart.steps import promote as promote_step

    outcome = promote_step.run(out_dir / "decision.json", tracking)
    if outcome.promoted != decision.promote:  # the champion moved while this run was gated
        record.update(decision="rejected", summary=outcome.reason)
    if outcome.schedule is not None:  # as counted under the lock: another pipeline may have counted too
        record["schedule"] = {**record["schedule"], "recorded": outcome.schedule}
    if outcome.promoted or outcome.promoted != decision.promote or outcome.schedule is not None:
        if outcome.promoted:  # the champion mark moves here, not by reading the registry again: past the
            history = [{**h, "champion": h["version"] == record["version"]} for h in history]  # commit, a read may fail
        decision_record.write(out_dir, eval_dir, decision, record, history)
    return outcome.previous_champion, outcome.promoted
