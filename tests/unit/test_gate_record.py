"""The gate's numbers where people read them: the flat numbers for MLflow and the KFP
Metrics, the `headstart summary` table and `headstart status`, from a real decision record."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from headstart.evaluation.gate import ModelEval, ScheduleState, decide
from headstart.registry.decision_record import gate_numbers
from headstart.summary import render, render_status
from tests.helpers import params_cfg

CLASSES = ("cat", "dog", "owl")


def _record(champion: bool = True) -> dict:
    """decide() on 300 images: the candidate breaks 30 the champion got right and fixes 15 (owl images)."""
    y = np.repeat(np.arange(3), 100)
    champ, cand = y.copy(), y.copy()
    cand[:30] = 1  # 30 cats broken
    champ[200:215] = 0  # 15 owls the champion got wrong, the candidate right
    before = ScheduleState(window_runs=4, horizon_runs=52, alpha_spent=4e-3, window=2, reset_reason="by hand")
    decision = decide(ModelEval("scratch", y, cand, CLASSES), ModelEval("scratch", y, cand, CLASSES),
                      ModelEval("champion", y, champ, CLASSES, version="3") if champion else None,
                      params_cfg("gate", min_accuracy=0.0, max_negative_flip_rate=0.05), schedule=before)
    return {**decision.to_dict(), "model_name": "m", "version": "4", "winner": "scratch", "champion_version": "3"}


def test_gate_numbers_carry_accuracy_flips_and_the_schedule():
    numbers = gate_numbers(_record())
    assert numbers["test_accuracy"] == pytest.approx(270 / 300) and "test_macro_f1" in numbers
    assert numbers["nfr"] == pytest.approx(30 / 300) and numbers["pfr"] == pytest.approx(15 / 300)
    assert numbers["nfi"] == pytest.approx(30 / 30)  # every candidate error is a new one
    assert numbers["nfr_ci_low"] < numbers["nfr"] < numbers["nfr_ci_high"]
    assert (numbers["negative_flips"], numbers["positive_flips"]) == (30, 15)
    assert numbers["alpha_run"] == pytest.approx(0.10 / 52 / 2)
    assert (numbers["gate_window"], numbers["gate_window_runs"], numbers["gate_horizon_runs"]) == (2, 5, 52)
    assert all(isinstance(v, float) for v in numbers.values())


def test_a_first_run_has_no_flips_and_spends_nothing():
    numbers = gate_numbers(_record(champion=False))
    assert "nfr" not in numbers and "alpha_run" not in numbers and "gate_window_runs" not in numbers
    assert numbers["test_accuracy"] == pytest.approx(270 / 300)


def _outputs(root: Path, record: dict) -> Path:
    for role in ("finetune", "scratch"):
        (root / role).mkdir(parents=True)
        (root / role / "metrics.json").write_text(json.dumps({"seconds": 12.0, "best_epoch": 1}))
    (root / "evaluation").mkdir()
    models = {m: {"accuracy": 0.9, "macro_f1": 0.9} for m in ("finetune", "scratch", "champion")}
    (root / "evaluation" / "metrics.json").write_text(json.dumps({"models": models, "champion_version": "3"}))
    (root / "decision").mkdir()
    (root / "decision" / "decision.json").write_text(json.dumps(record))
    (root / "decision" / "registration.json").write_text(json.dumps(
        {"model_name": "m", "version": "4", "winner": "scratch", "promoted": False, "alias": None,
         "previous_champion": None}))
    return root


def _text(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_summary_shows_the_flips_worst_class_first_and_the_schedule_as_counted(tmp_path: Path):
    record = _record()
    record["schedule"]["recorded"] = {**record["schedule"]["after"], "window_runs": 6}  # another pipeline counted too
    text = _text(render(_outputs(tmp_path, record), params_cfg("tracking", tracking_uri="sqlite:///x.db")))
    assert "Flips against the champion" in text and "negative_flips" in text  # the check row too
    lines = text.splitlines()
    overall = next(ln for ln in lines if "all 300 images" in ln)
    assert "0.1000" in overall and "0.0500" in overall and " 30 " in overall and " 15 " in overall
    rows = [ln for ln in lines if ln.strip("│ ").startswith("class ")]
    assert "class cat" in rows[0] and "0.3000" in rows[0]  # 30 of 100 cats broken: the worst class first
    assert "run 6 of 52 in window 2" in text  # as recorded under the lock, not the pre-lock view


def test_status_shows_the_window_its_spending_and_the_last_reset():
    state = asdict(ScheduleState(window_runs=7, horizon_runs=52, alpha_spent=7e-3 / 10, window=3,
                                 reset_reason="manual promotion of v5 by alice: hotfix"))
    info = {"model": "m", "champion": None, "history": [], "rejected": [], "gate_schedule": state}
    text = " ".join(_text(render_status(info)).split())
    assert "window 3, 7 of 52 runs used" in text and "0.0007 per candidate" in text
    assert "last reset: manual promotion of v5 by alice: hotfix" in text
    corrupt = {**info, "gate_schedule": {"error": "registered model 'm': its gate schedule is unreadable"}}
    assert "unreadable" in _text(render_status(corrupt))


def test_summary_points_at_the_pages_register_wrote(tmp_path: Path):
    outputs = _outputs(tmp_path, _record())
    text = " ".join(_text(render(outputs, params_cfg("tracking", tracking_uri="sqlite:///x.db"))).split())
    assert "Open in a browser" not in text  # no page written: none named
    for name in ("report.html", "decision.html"):
        (outputs / "decision" / name).write_text("<html></html>")
    text = " ".join(_text(render(outputs, params_cfg("tracking", tracking_uri="sqlite:///x.db"))).split())
    pages = f"{outputs / 'decision' / 'report.html'}, {outputs / 'decision' / 'decision.html'}"
    assert f"Open in a browser: {pages}" in text
