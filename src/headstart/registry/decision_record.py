"""The decision record as people read it: what the pure gate cannot know, added after registration.

headstart.evaluation.gate decides on predictions alone; the registered version, the data version (git commit and
data.dvc md5) and the MLflow run and version exist only once register has written them. `complete` adds
them to the record (decision.json), `to_markdown` renders decision.md from both, ending, after a
rejection, with what to do next for each failed check and the exact override command; `to_html` makes
decision.html of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from headstart.evaluation.gate import (
    ACCURACY_FLOOR,
    BEATS_BASELINE,
    CLASS_RECALL,
    LABEL_SET,
    MACRO_F1_FLOOR,
    NEGATIVE_FLIPS,
    NO_REGRESSION,
    Decision,
)

SERVING_CHECK = "serving_check"  # added by headstart.serving.verify after the gate's own checks
TRAIN_MORE = ("train more: raise `train.shared.epochs` or `train.shared.images_per_class` (or the learning rates "
              "`train.finetune.lr_head` / `lr_backbone`) in params.yaml and re-run")


def mlflow_refs(tracking_uri: str, experiment_id: str | None, run_id: str, model: str, version: str) -> dict[str, Any]:
    """Where the run and the version are in the MLflow UI: links for a tracking server; for a local store,
    the command that serves its UI and the pages to open there."""
    parts = urlsplit(tracking_uri)  # the URI shown drops any user name or password: anyone may read the record
    uri = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])) if "@" in parts.netloc else tracking_uri
    run_page = f"#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else None
    version_page = f"#/models/{quote(model, safe='')}/versions/{version}"
    refs: dict[str, Any] = {"tracking_uri": uri, "run_id": run_id, "experiment_id": experiment_id,
                            "model_name": model, "version": version}
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        refs.update(version_url=f"{base}/{version_page}", run_url=f"{base}/{run_page}" if run_page else None)
    else:
        refs.update(version_url=None, run_url=None,
                    ui_command=f"mlflow ui --backend-store-uri {uri} --port 5000",
                    ui_pages=[f"http://127.0.0.1:5000/{p}" for p in (version_page, run_page) if p])
    return refs


def complete(record: dict[str, Any], version: str, data_tags: dict[str, str], mlflow: dict[str, Any]) -> dict[str, Any]:
    """The gate's record plus the version it is about, the data version and the MLflow references."""
    links = {"decision_record": f"runs:/{mlflow['run_id']}/decision", "decision_md": "decision.md",
             "report": "report.html"}
    if mlflow.get("version_url"):
        links.update(mlflow_version=mlflow["version_url"], mlflow_run=mlflow["run_url"])
    return {**record, "candidate": {**record["candidate"], "version": version},
            "data_version": {"git_commit": data_tags.get("git.commit"), "data_md5": data_tags.get("data.dvc_md5")},
            "mlflow": mlflow, "links": links}


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "?" if v is None else format(v, spec)


def _next_step(c: dict[str, Any], r: dict[str, Any]) -> str:
    """What to do about failed check `c` of record `r`."""
    name = c["name"]
    if name in (ACCURACY_FLOOR, MACRO_F1_FLOOR):
        knob = "gate.min_accuracy" if name == ACCURACY_FLOOR else "gate.min_macro_f1"
        return (f"The candidate scored {_fmt(c['value'])}, below `{knob}` {_fmt(c['threshold'])} (params.yaml). "
                f"If the floor is too strict for this data, lower `{knob}`; otherwise {TRAIN_MORE}.")
    if name == BEATS_BASELINE:
        return ("Fine-tuning did not beat the scratch baseline by `gate.min_gain_over_baseline` "
                f"({_fmt(c['threshold'], '+.4f')}): the pre-trained weights are not paying. Check "
                "`train.finetune.weights`, `lr_backbone` and `probe_epochs`, or set `gate.min_gain_over_baseline: "
                "null` to stop requiring it.")
    if name == NO_REGRESSION:
        schedule = r.get("schedule") or {}
        th = r.get("thresholds") or {}
        return (f"The gain over the champion, {_fmt(c['value'], '+.4f')} (lower bound {_fmt(c['ci_low'], '+.4f')}), "
                f"is not proven at this run's level alpha_run {_fmt(schedule.get('alpha_run'), '.2g')}: the gate's "
                f"false-promotion budget `gate.false_promotion_budget` {th.get('false_promotion_budget')} spread "
                f"over `gate.horizon_runs` {th.get('horizon_runs')} runs and {schedule.get('candidates_compared')} "
                "candidates, so one run must show a clear gain. A real but small gain needs more evidence: a larger "
                f"test split, or a stronger candidate ({TRAIN_MORE}). If you want this model anyway, override.")
    if name == CLASS_RECALL:
        return (f"Class {c.get('subject')!r} lost recall beyond `gate.max_class_recall_drop` "
                f"{_fmt(c['threshold'])} with Holm-corrected evidence. Look at its errors in the evaluation report; "
                "add training images of that class, or override if the trade is intended.")
    if name == NEGATIVE_FLIPS:
        return (f"The candidate breaks too many images the champion got right: NFR {_fmt(c['value'])}, its lower "
                f"bound {_fmt(c['ci_low'])} above `gate.max_negative_flip_rate` {_fmt(c['threshold'])}. Keep "
                "`train.shared.congruent: true` (positive-congruent training) and raise "
                "`train.shared.congruent_beta`, or raise the limit if these flips are acceptable; the per-class "
                "table above shows where they are.")
    if name == LABEL_SET:
        return (f"The classes changed ({c.get('subject')}). The gate never promotes a label-set change on its "
                "own. If it is intended, review this version and override; if not, fix the data (or "
                "`validate.label_set` in params.yaml) and re-run.")
    if name == SERVING_CHECK:
        return ("The registered model does not serve what was evaluated: fix its packaging (headstart.serving, "
                "the logged pip requirements) and re-run `headstart register`; if it timed out on a slow machine, "
                "raise `register.serving_check_timeout_s`. Do not override a failed serving check.")
    return c["detail"]


def next_steps(record: dict[str, Any]) -> list[str]:
    """One line per failed check, then the override; nothing for a promotion."""
    if record.get("decision") == "promoted":
        return []
    failed = [c for c in record.get("checks", []) if c.get("applies") and not c.get("passed")]
    lines = [f"**{c['name']}**: " + _next_step(c, record) for c in failed]
    version = (record.get("candidate") or {}).get("version") or record.get("version") or "N"
    lines.append(f"To promote it anyway, a person overrides the gate (recorded with who and why): "
                 f'`headstart promote --version {version} --reason "..."`')
    return lines


def to_markdown(decision: Decision, record: dict[str, Any]) -> str:
    """decision.md: the version and the data version first, the MLflow references, the gate's own record,
    and after a rejection what to do next."""
    data, m = record.get("data_version") or {}, record.get("mlflow") or {}
    name, version = m.get("model_name") or record.get("model_name"), record["candidate"]["version"]
    lines = [f"# `{name}` v{version}: {record['decision']}", "",
             f"- Version: `{name}` v{version} ({record['candidate']['name']})",
             f"- Data version: git commit `{data.get('git_commit')}`, data.dvc md5 `{data.get('data_md5')}`"]
    if m.get("version_url"):
        lines += [f"- MLflow: [version v{version}]({m['version_url']}), [run {m['run_id']}]({m['run_url']})"]
    elif m:
        pages = ", ".join(m.get("ui_pages") or [])
        lines += [f"- MLflow: run `{m['run_id']}` in `{m['tracking_uri']}`; see it with `{m['ui_command']}`, "
                  f"then open {pages}"]
    lines += ["- Evaluation report: [report.html](report.html); this record as a page: [decision.html](decision.html)",
              "", decision.to_markdown()]
    if steps := next_steps(record):
        lines += ["### What to do next", "", *[f"- {s}" for s in steps], ""]
    return "\n".join(lines)


def to_html(markdown: str, title: str) -> str:
    """decision.html: decision.md as a page, for MLflow's artifact viewer (which shows .md as plain text) and
    a browser. Raw HTML in the markdown is escaped, not passed through: class names come from the data."""
    import html

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:70em;padding:0 1em;line-height:1.4}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
            "th{background:#f4f4f4}code{background:#f4f4f4;padding:0 3px}</style></head><body>"
            + body + "</body></html>\n")


def version_description(record: dict[str, Any], models: dict[str, dict[str, float]]) -> str:
    """One paragraph for the version's page in MLflow: what it is, its numbers against the champion, the verdict."""
    winner, version = record["candidate"]["name"], record["candidate"]["version"]
    own = models.get(winner) or {}
    champ = models.get("champion")
    against = (f"champion v{record.get('champion_version')} {_fmt(champ.get('accuracy'))}" if champ
               else "no champion yet")
    verdict = "gate passed" if record["decision"] == "promoted" else "refused"
    return (f"v{version}: {winner}, test accuracy {_fmt(own.get('accuracy'))}, macro-F1 {_fmt(own.get('macro_f1'))} "
            f"({against}); {verdict}: {str(record.get('summary')).split(': ', 1)[-1]}. Decision record: "
            f"{(record.get('links') or {}).get('decision_record')}")


def model_description(what: str, arch: str, image_size: int, classes: list[str]) -> str:
    """The registered model's description: what it classifies and how a version becomes champion."""
    shown = ", ".join(classes[:12]) + (f" and {len(classes) - 12} more" if len(classes) > 12 else "")
    return (f"{what}: {arch} at {image_size} px over {len(classes)} classes ({shown}). Versions are registered "
            "by the Headstart loop (finetune and scratch trained on the same data, the better one registered) "
            "and the alias `champion` moves only when the gate passes: accuracy floors, a paired test against "
            "the scratch baseline and the champion at a false-promotion budget per window of runs, per-class "
            "recall, negative flips and a serving check (thresholds in params.yaml `gate:`). Each version's "
            "description says its decision; its tag `headstart.decision_record` points at decision.md.")


def gate_numbers(record: dict[str, Any]) -> dict[str, float]:
    """The decision record's numbers, flat, for MLflow and the KFP Metrics: accuracy, macro-F1, the flips
    against the champion with their intervals, and the schedule (alpha_run, the run's place in its window)."""
    checks = {c["name"]: c for c in record.get("checks", [])}
    out: dict[str, Any] = {"test_accuracy": (checks.get("accuracy_floor") or {}).get("value"),
                           "test_macro_f1": (checks.get("macro_f1_floor") or {}).get("value")}
    flips = record.get("flips") or {}
    for key in ("nfr", "pfr", "nfi"):
        out[key] = flips.get(key)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = flips.get(f"{key}_ci") or (None, None)
    out["negative_flips"], out["positive_flips"] = flips.get("negative_flips"), flips.get("positive_flips")
    schedule = record.get("schedule") or {}
    out["alpha_run"] = schedule.get("alpha_run")
    after = schedule.get("recorded") or schedule.get("after") or {}
    if schedule.get("alpha_run") is not None:
        out.update({"gate_window": after.get("window"), "gate_window_runs": after.get("window_runs"),
                    "gate_horizon_runs": after.get("horizon_runs"), "gate_alpha_spent": after.get("alpha_spent")})
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def decision_numbers(record: dict[str, Any]) -> dict[str, float]:
    """gate_numbers plus the verdict (`gate_passed` 1/0) and the version, for the KFP Metrics: Kubeflow's
    Compare runs lists them. In the pipeline the promote task moves the alias, so this says the gate passed."""
    extra = {"gate_passed": float(record["decision"] == "promoted")}
    if str(record.get("version", "")).isdigit():
        extra["version"] = float(record["version"])
    return {**gate_numbers(record), **extra}


def write(out_dir: Path, eval_dir: Path, decision: Decision, record: dict[str, Any],
          history: list[dict[str, Any]]) -> None:
    """decision.json, decision.md, decision.html and the evaluation report with the decision, all from `record`."""
    from headstart.evaluation import report

    (out_dir / "decision.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    markdown = to_markdown(decision, record)
    (out_dir / "decision.md").write_text(markdown)
    (out_dir / "decision.html").write_text(to_html(markdown, f"decision: v{record['version']}"))
    report.write(eval_dir, out_dir / "report.html", record, history, record["links"])
