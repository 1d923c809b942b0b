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


def collect(outputs: Path) -> dict[str, Any]:
    return {
        "train": {r: _read(outputs / r / "metrics.json") for r in ("finetune", "scratch")},
        "eval": _read(outputs / "evaluation" / "metrics.json"),
        "decision": _read(outputs / "decision" / "decision.json"),
        "registration": _read(outputs / "decision" / "registration.json"),
    }


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def render(outputs: Path, tracking: TrackingConfig) -> Group:
    info = collect(outputs)
    models, reg, dec = info["eval"]["models"], info["registration"], info["decision"]
    cands = Table(title="Candidates on the test split", title_justify="left")
    for col in ("model", "test accuracy", "macro-F1", "train time (s)", "best epoch"):
        cands.add_column(col, justify="left" if col == "model" else "right")
    for role in ("finetune", "scratch"):
        t = info["train"][role]
        mark = " ★" if reg["winner"] == role else ""
        cands.add_row(role + mark, _num(models[role]["accuracy"]), _num(models[role]["macro_f1"]),
                      _num(t["seconds"], "{:.0f}"), str(t["best_epoch"]))
    if "champion" in models:
        cands.add_row(f"champion v{info['eval']['champion_version']} (before)", _num(models["champion"]["accuracy"]),
                      _num(models["champion"]["macro_f1"]), "—", "—")
    comp = info["eval"].get("comparison") or {}
    lines = []
    with_tta = [name for name, m in models.items() if m.get("tta") == "flip"]
    if with_tta:
        lines.append(f"Scored with flip test-time augmentation (as served): {', '.join(with_tta)}")
    if comp:
        lines.append(f"finetune − scratch: {comp['accuracy_diff']:+.4f} "
                     f"({comp['ci_level']:.0%} CI {comp['ci_low']:+.4f}..{comp['ci_high']:+.4f}, "
                     f"McNemar p={comp['mcnemar_p']:.3g})")
    if reg["winner"] == "scratch":
        lines.append("Winner: scratch — pre-training did not pay this time; the baseline is registered.")
    else:
        lines.append("Winner: finetune — the pre-trained backbone beat the scratch baseline.")
    gate = Table(title="Gate checks", title_justify="left")
    for col in ("check", "result", "value", "threshold", "CI", "p"):
        gate.add_column(col)
    for c in dec["checks"]:
        status = "n/a" if not c["applies"] else ("pass" if c["passed"] else "FAIL")
        style = {"pass": "green", "FAIL": "red"}.get(status, "dim")
        ci = "" if c.get("ci_low") is None else f"{c['ci_low']:.3f}..{c['ci_high']:.3f}"
        gate.add_row(c["name"], Text(status, style=style), _num(c.get("value")), _num(c.get("threshold")), ci,
                     _num(c.get("p_value"), "{:.3g}"))
    verdict = (Text(f"PROMOTED: {reg['model_name']} v{reg['version']} now has alias @champion", style="bold green")
               if reg["promoted"] else
               Text(f"NOT PROMOTED: {reg['model_name']} v{reg['version']} registered, tagged rejected; "
                    "the champion is unchanged", style="bold yellow"))
    tail = [Text(f"MLflow model: {reg['model_name']} version {reg['version']}"
                 + (f", alias {reg['alias']}" if reg.get("alias") else "")
                 + (f" (previous champion v{reg['previous_champion']})" if reg.get("previous_champion") else "")),
            Text(f"Open the MLflow UI: {ui_command(tracking)}")]
    return Group(cands, *[Text(x) for x in lines], gate, verdict, *tail)


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
    return Group(head, hist, rej)
