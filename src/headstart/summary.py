"""The end-of-run summary table, rebuilt from the step outputs (works after `dvc repro` too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from headstart.config import TrackingConfig
from headstart.errors import DataError
from headstart.tracking import ui_command


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: missing; run the loop first (`make run` or `dvc repro`)")
    return json.loads(path.read_text())


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def render(outputs: Path, tracking: TrackingConfig) -> Group:
    train = {r: _read(outputs / r / "metrics.json") for r in ("finetune", "scratch")}
    evaluation = _read(outputs / "evaluation" / "metrics.json")
    dec, reg = _read(outputs / "decision" / "decision.json"), _read(outputs / "decision" / "registration.json")
    models = evaluation["models"]
    cands = Table(title="Candidates on the test split", title_justify="left")
    for col in ("model", "test accuracy", "macro-F1", "train time (s)", "best epoch"):
        cands.add_column(col, justify="left" if col == "model" else "right")
    for role in ("finetune", "scratch"):
        t = train[role]
        mark = " ★" if reg["winner"] == role else ""
        cands.add_row(role + mark, _num(models[role]["accuracy"]), _num(models[role]["macro_f1"]),
                      _num(t["seconds"], "{:.0f}"), str(t["best_epoch"]))
    if "champion" in models:
        cands.add_row(f"champion v{evaluation['champion_version']} (before)", _num(models["champion"]["accuracy"]),
                      _num(models["champion"]["macro_f1"]), "—", "—")
    comp = evaluation.get("comparison") or {}
    lines = []
    with_tta = [name for name, m in models.items() if m.get("tta") == "flip"]
    if with_tta:
        lines.append(f"Scored with flip test-time augmentation (as served): {', '.join(with_tta)}")
    if comp:
        lines.append(f"finetune − scratch: {comp['accuracy_diff']:+.4f} "
                     f"({comp['ci_level']:.0%} CI {comp['ci_low']:+.4f}..{comp['ci_high']:+.4f}, "
                     f"McNemar p={comp['mcnemar_p']:.3g})")
    lines.append("Winner: scratch — pre-training did not pay this time; the baseline is registered."
                 if reg["winner"] == "scratch" else
                 "Winner: finetune — the pre-trained backbone beat the scratch baseline.")
    gate = Table(title="Gate checks", title_justify="left")
    for col in ("check", "result", "value", "threshold", "CI", "p"):
        gate.add_column(col)
    for c in dec["checks"]:
        status = "n/a" if not c["applies"] else ("pass" if c["passed"] else "FAIL")
        style = {"pass": "green", "FAIL": "red"}.get(status, "dim")
        ci = "" if c.get("ci_low") is None else f"{c['ci_low']:.3f}..{c['ci_high']:.3f}"
        gate.add_row(c["name"], Text(status, style=style), _num(c.get("value")), _num(c.get("threshold")), ci,
                     _num(c.get("p_value"), "{:.3g}"))
    flips = _flips_table(dec.get("flips"))
    schedule = _schedule_line(dec.get("schedule"), dec.get("thresholds") or {})
    verdict = (Text(f"PROMOTED: {reg['model_name']} v{reg['version']} now has alias @champion", style="bold green")
               if reg["promoted"] else
               Text(f"NOT PROMOTED: {reg['model_name']} v{reg['version']} registered, tagged rejected; "
                    "the champion is unchanged", style="bold yellow"))
    tail = [Text(f"MLflow model: {reg['model_name']} version {reg['version']}"
                 + (f", alias {reg['alias']}" if reg.get("alias") else "")
                 + (f" (previous champion v{reg['previous_champion']})" if reg.get("previous_champion") else "")),
            Text(f"Open the MLflow UI: {ui_command(tracking)}")]
    pages = [outputs / "decision" / n for n in ("report.html", "decision.html") if (outputs / "decision" / n).is_file()]
    if pages:
        tail.append(Text("Open in a browser: " + ", ".join(str(p) for p in pages)))
    return Group(cands, *[Text(x) for x in lines], gate, *([flips] if flips else []),
                 *([Text(schedule)] if schedule else []), verdict, *tail)


def _ci(value: Any, ci: list[float] | None) -> str:
    return _num(value) + ("" if not ci or ci[0] is None else f" ({ci[0]:.4f}..{ci[1]:.4f})")


def _flips_table(flips: dict[str, Any] | None, worst: int = 5) -> Table | None:
    """NFR, PFR and NFI against the champion with their intervals, then the classes with the highest NFR."""
    if not flips:
        return None
    table = Table(title="Flips against the champion", title_justify="left")
    for col in ("", "NFR (broken)", "PFR (fixed)", "NFI", "negative flips", "positive flips"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row(f"all {flips['n']} images", _ci(flips["nfr"], flips.get("nfr_ci")),
                  _ci(flips["pfr"], flips.get("pfr_ci")), _ci(flips.get("nfi"), flips.get("nfi_ci")),
                  str(flips["negative_flips"]), str(flips["positive_flips"]))
    per_class = sorted(flips.get("per_class") or [], key=lambda c: -(c.get("nfr") or 0.0))
    for c in per_class[:worst]:
        table.add_row(f"class {c['class']} (n={c['support']})", _ci(c["nfr"], c.get("nfr_ci")),
                      _ci(c["pfr"], c.get("pfr_ci")), "", str(c["negative_flips"]), str(c["positive_flips"]))
    return table


def _schedule_line(schedule: dict[str, Any] | None, thresholds: dict[str, Any]) -> str | None:
    """Where this run stands in the gate's window of runs, as counted (under the lock when it was)."""
    if not schedule:
        return None
    state = schedule.get("recorded") or schedule.get("after") or {}
    budget = thresholds.get("false_promotion_budget")
    if schedule.get("alpha_run") is None:
        return (f"Gate schedule: not counted (nothing compared against a champion); window {state.get('window')}, "
                f"{state.get('window_runs')} of {state.get('horizon_runs')} runs used")
    spent = state.get("alpha_spent", 0.0) * schedule.get("candidates_compared", 1)  # the window's bound so far
    return (f"Gate schedule: run {state.get('window_runs')} of {state.get('horizon_runs')} in window "
            f"{state.get('window')}; this run's false-promotion level {schedule['alpha_run']:.2g} per candidate, "
            f"{spent:.3g} of the budget" + (f" {budget:g}" if budget is not None else "") + " spent")


def render_status(info: dict[str, Any]) -> Group:
    champ = info["champion"]
    head = (Text(f"{info['model']}: no champion yet", style="yellow") if champ is None else
            Text(f"{info['model']}: champion v{champ['version']} ({champ.get('winner') or '?'}), "
                 f"data {champ.get('data') or '?'}, "
                 + ", ".join(f"{k.removeprefix('metric.')}={v}" for k, v in sorted(champ["metrics"].items())),
                 style="bold green"))
    hist = Table(title="Champion history (newest last)", title_justify="left")
    for col in ("at", "action", "version", "previous", "by", "reason"):
        hist.add_column(col)
    for h in info["history"][-10:]:
        hist.add_row(h.get("at", ""), h.get("action", ""), f"v{h['version']}",
                     f"v{h['previous']}" if h.get("previous") else "—", h.get("by", ""), h.get("reason", "")[:80])
    rej = Table(title="Latest rejected candidates", title_justify="left")
    rej.add_column("version"), rej.add_column("reason")
    for r in info["rejected"]:
        rej.add_row(f"v{r['version']}", r["reason"])
    return Group(head, hist, rej, status_schedule(info.get("gate_schedule")))


def status_schedule(state: dict[str, Any] | None) -> Text:
    """The gate's window: runs used of the horizon, error budget spent, and the last reset."""
    if state is None:
        return Text("Gate schedule: none yet (no run judged against a champion)")
    if "error" in state:
        return Text(f"Gate schedule: {state['error']}", style="bold red")
    reset = f"; last reset: {state['reset_reason']}" if state.get("reset_reason") else ""
    return Text(f"Gate schedule: window {state['window']}, {state['window_runs']} of {state['horizon_runs']} runs "
                f"used, false-promotion level spent {state['alpha_spent']:.4g} per candidate{reset}")
