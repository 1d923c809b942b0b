"""The evaluation report: one self-contained HTML page, the same locally, in MLflow and in the Kubeflow UI.

Evaluate writes it without a decision (the verdict is pending); register writes it again with the decision
record and the registry's history. Everything it shows is read from the evaluation folder (metrics.json,
predictions.npz, examples/, history_<model>.json), so any step that has the folder can render it. The
page carries its CSS, its images (data: URIs) and a few lines of sorting script: the Kubeflow UI shows it
in a sandboxed iframe, offline. At 1,000 classes its tables hold the worst TOP_K classes, the matrices the
compact picture, and the thumbnails stay capped (examples.CAP).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from headstart.config import TrackingConfig
from headstart.evaluation import plots, stats

TOP_K = 50  # rows per per-class table past this many classes
TABLE_MATRIX_MAX = plots.LABELLED_MAX  # up to this many classes the matrix is an HTML table of percentages
CANDIDATES = ("finetune", "scratch")
DECISION_PAGE = "outputs/decision/report.html (Kubeflow: the register task's `report` output)"

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
    "th{background:#f4f4f4;cursor:pointer}td:first-child,th:first-child{text-align:left}"
    ".promoted{color:#176f2c}.refused{color:#b00020}.pending{color:#8a6d00}tr.flagged td{background:#fde2e2}"
    ".neg{color:#b00020}.pos{color:#176f2c}.note{color:#555;font-size:.9em}figure{display:inline-block;margin:4px;"
    "text-align:center;font-size:.75em}figure img{width:64px;height:64px;image-rendering:pixelated}"
    "td.delta{white-space:nowrap}div.block{display:inline-block;vertical-align:top;margin-right:1.5em}"
    "table.matrix td{font-size:.8em;min-width:2.6em}img.plot{max-width:100%}section{margin-bottom:2em}"
)
SORT_JS = (
    "document.querySelectorAll('table.sortable th').forEach((th,i)=>th.onclick=()=>{const t=th.closest('table'),"
    "b=t.tBodies[0],d=th.dataset.d=th.dataset.d==='1'?'-1':'1',v=r=>{const x=r.cells[i].dataset.v??"
    "r.cells[i].textContent;return isNaN(parseFloat(x))?x:parseFloat(x)};[...b.rows].sort((p,q)=>"
    "(v(p)>v(q)?1:v(p)<v(q)?-1:0)*d).forEach(r=>b.appendChild(r))});"
)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _table(attrs: str, head: list[str], rows: str) -> str:
    """A table with the column titles `head` (HTML) and the rows, ready."""
    cells = "".join(f"<th>{h}</th>" for h in head)
    return f"<table{attrs}><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>"


def _png(fig: Any) -> bytes:
    """A matplotlib figure, laid out, as PNG bytes, closed after."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plots._pyplot().close(fig)
    return buf.getvalue()


def _img(data: bytes, alt: str, cls: str = "plot", mime: str = "png") -> str:
    """An <img> that carries its picture (a data: URI): the page stays one file."""
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/{mime};base64,{base64.b64encode(data).decode()}"/>'


class Evaluation:
    """What the evaluation folder holds, read once."""

    def __init__(self, eval_dir: Path):
        self.dir = eval_dir
        meta = json.loads((eval_dir / "metrics.json").read_text())
        self.models: dict[str, dict[str, Any]] = meta["models"]
        self.classes: list[str] = meta["classes"]
        self.champion_version: str | None = meta.get("champion_version")
        self.comparison: dict[str, Any] = meta.get("comparison") or {}
        with np.load(eval_dir / "predictions.npz") as data:
            self.y = data["y_true"]
            self.pred = {k[5:]: data[k] for k in data.files if k.startswith("pred_")}
            self.conf = {k[5:]: data[k] for k in data.files if k.startswith("conf_")}
        index = eval_dir / "examples" / "index.json"
        self.examples: dict[str, list[int]] = json.loads(index.read_text()) if index.is_file() else {}
        self.histories = {m: json.loads((eval_dir / f"history_{m}.json").read_text())
                          for m in CANDIDATES if (eval_dir / f"history_{m}.json").is_file()}

    def correct(self, model: str) -> np.ndarray:
        return self.pred[model] == self.y

    def no_champion(self) -> str:
        """Why there is nothing to compare with the champion."""
        if self.champion_version:
            return f"Champion v{self.champion_version} was trained on other classes and not scored."
        return "No champion yet."

    def label(self, model: str) -> str:
        return f"champion v{self.champion_version}" if model == "champion" else model


def _roles(ev: Evaluation, decision: dict[str, Any] | None) -> tuple[str, str | None]:
    """The candidate (the gate's winner; finetune before a decision) and the baseline (the other one)."""
    cand = (decision or {}).get("winner") or ((decision or {}).get("candidate") or {}).get("name") or "finetune"
    cand = cand if cand in ev.pred else next(iter(ev.pred))
    base = next((m for m in CANDIDATES if m != cand and m in ev.pred), None)
    return cand, base


def _link_ok(href: str, page_dir: Path) -> bool:
    """http(s) URLs, and relative links to files that exist next to the page; nothing else is shown."""
    if href.startswith(("http://", "https://")):
        return True
    return "://" not in href and not href.startswith("/") and (page_dir / href).is_file()


def decision_section(decision: dict[str, Any] | None, links: dict[str, str], page_dir: Path) -> str:
    if decision is None:
        return ('<section id="decision"><h2 class="pending">Decision pending</h2><p>This page was written by '
                "evaluate, before register gated the candidate against the champion. The decision, with this "
                f"report, will be in {_e(DECISION_PAGE)}.</p></section>")
    promoted = decision.get("decision") == "promoted" or decision.get("promote") is True
    version = decision.get("version") or (decision.get("candidate") or {}).get("version")
    model = decision.get("model_name", "")
    head = f"{'Promoted' if promoted else 'Refused'}: {model} v{version}" if version else (
        "Promoted" if promoted else "Refused")
    data = decision.get("data_version") or {}
    data_line = ", ".join(f"{k} {_e(v)}" for k, v in (("git commit", data.get("git_commit")),
                                                       ("data.dvc md5", data.get("data_md5"))) if v) or "not recorded"
    failed = [c for c in decision.get("checks", []) if c.get("applies", True) and not c.get("passed", True)]
    rows = "".join(f"<tr><td>{_e(c['name'])}</td><td>{_f(c.get('value'), '.4f')}</td>"
                   f"<td>{_f(c.get('threshold'), '.4f')}</td><td style='text-align:left'>{_e(c.get('detail', ''))}"
                   "</td></tr>" for c in failed)
    checks = _table(" id='failed-checks'", ["failed check", "value", "threshold", "detail"], rows) if failed else \
        "<p>All applicable checks passed.</p>"
    champ = decision.get("champion_version")
    every = {**(decision.get("links") or {}), **links}
    shown = [f'<li><a href="{_e(h)}">{_e(n)}</a></li>' for n, h in every.items() if _link_ok(str(h), page_dir)]
    return (f'<section id="decision"><h2 class="{"promoted" if promoted else "refused"}">{_e(head)}</h2>'
            f"<p>{_e(decision.get('summary', ''))}</p><p>Champion judged against: "
            f"{f'v{_e(champ)}' if champ else 'none (no champion yet)'}. Data version: {data_line}.</p>{checks}"
            + (f"<ul class='links'>{''.join(shown)}</ul>" if shown else "") + "</section>")


def _flagged(ev: Evaluation, cand: str, decision: dict[str, Any] | None) -> set[int]:
    """Classes whose recall drop the gate's Holm-corrected test (stats.class_recall_drops, at the recorded
    thresholds) finds significant; none when the gate did not run that check."""
    check = next((c for c in (decision or {}).get("checks", []) if c.get("name") == "class_recall"), None)
    if check is None or not check.get("applies") or "champion" not in ev.pred:
        return set()
    th = decision.get("thresholds", {})
    res = stats.class_recall_drops(ev.y, ev.correct(cand), ev.correct("champion"), len(ev.classes),
                                   th.get("max_class_recall_drop", 0.05))
    return {int(k) for k in np.flatnonzero(res.p_adjusted < th.get("alpha", 0.05))}


def per_class_section(ev: Evaluation, cand: str, base: str | None, decision: dict[str, Any] | None) -> str:
    n = len(ev.classes)
    others = [m for m in ("champion", base) if m and m in ev.pred]
    prf = {m: stats.per_class_prf(ev.y, ev.pred[m], n) for m in [cand, *others]}
    deltas = {m: stats.paired_recall_diff(ev.y, ev.correct(cand), ev.correct(m), n) for m in others}
    flagged = _flagged(ev, cand, decision)
    key = deltas.get("champion", deltas.get(base)) if others else None
    order = np.argsort(np.nan_to_num(key[0], nan=np.inf), kind="stable") if key is not None else np.arange(n)
    shown = order[:TOP_K]
    head = ["class", "support", *(f"{_e(ev.label(m))} {k}" for m in prf for k in ("precision", "recall", "F1")),
            *(f"Δ recall vs {_e(ev.label(m))} [95% CI]" for m in deltas)]
    rows = []
    for k in shown:
        cells = [f"<td>{_e(ev.classes[k])}{' ⚑' if k in flagged else ''}</td>",
                 f"<td>{int(prf[cand]['support'][k])}</td>"]
        cells += [f"<td>{_f(prf[m][s][k])}</td>" for m in prf for s in ("precision", "recall", "f1")]
        for d, lo, hi in deltas.values():
            sign = "neg" if hi[k] < 0 else "pos" if lo[k] > 0 else ""
            cells.append(f'<td class="{sign} delta" data-v="{_f(d[k], ".6f")}">{_f(d[k], "+.3f")} '
                         f"[{_f(lo[k], '+.3f')}, {_f(hi[k], '+.3f')}]</td>")
        rows.append(f'<tr class="class-row{" flagged" if k in flagged else ""}">{"".join(cells)}</tr>')
    note = f"<p class='note'>The {len(shown)} classes with the worst Δ recall of {n}; all are in metrics.json.</p>" \
        if n > len(shown) else ""
    what = "; ⚑ = a drop the gate's Holm-corrected test finds significant" if flagged else ""
    missing = "" if "champion" in ev.pred else f"<p>{_e(ev.no_champion())} Compared with the baseline only.</p>"
    table = _table(" class='sortable'", head, "".join(rows))
    return (f'<section id="per-class"><h2>Per class: candidate {_e(cand)}</h2>{missing}<p class="note">Sorted by the '
            f"candidate's recall change, worst first (click a column to sort); intervals: normal, from the images "
            f"only one of the two got right{what}.</p>{note}{table}</section>")


def flips_section(ev: Evaluation, cand: str) -> str:
    """Counted from the predictions: the decision's flips (gate._flips) are these same counts."""
    if "champion" not in ev.pred:
        return f'<section id="flips"><h2>Flips against the champion</h2><p>{_e(ev.no_champion())}</p></section>'
    f = stats.flip_rates(ev.y, ev.correct(cand), ev.correct("champion"), len(ev.classes))
    n, neg, pos = f.support, f.negative_per_class, f.positive_per_class
    rows = "".join(
        f"<tr class='flip-row'><td>{_e(ev.classes[k])}</td><td>{n[k]}</td><td class='neg'>{neg[k]}</td>"
        f"<td>{_f(neg[k] / n[k] if n[k] else None)}</td><td class='pos'>{pos[k]}</td>"
        f"<td>{_f(pos[k] / n[k] if n[k] else None)}</td></tr>"
        for k in sorted(range(len(ev.classes)), key=lambda k: (-neg[k], ev.classes[k]))[:TOP_K])
    table = _table(" class='sortable'", ["class", "support", "negative", "NFR", "positive", "PFR"], rows)
    return ('<section id="flips"><h2>Flips against the champion</h2><p class="note">Negative: the champion right, '
            f"the candidate ({_e(cand)}) wrong; positive: the reverse. Most negative flips first.</p>{table}</section>")


def _matrix_table(matrix: np.ndarray, classes: list[str], model: str) -> str:
    share = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    rows = "".join(
        f"<tr><td>{_e(c)}</td>" + "".join(
            f"<td style='background:rgba(31,119,180,{share[i, j]:.2f});color:{'#fff' if share[i, j] > .5 else '#222'}'>"
            f"{share[i, j]:.0%}</td>" for j in range(len(classes))) + "</tr>" for i, c in enumerate(classes))
    return f"<h3>{_e(model)}</h3>" + _table(" class='matrix'", ["true \\ predicted", *map(_e, classes)], rows)


def confusion_section(ev: Evaluation) -> str:
    parts = []
    n = len(ev.classes)
    for m in ev.pred:
        parts.append("<div class='block'>")
        matrix = stats.confusion(ev.y, ev.pred[m], n)
        if n <= TABLE_MATRIX_MAX:
            parts.append(_matrix_table(matrix, ev.classes, ev.label(m)))
        elif (png := ev.dir / f"confusion_{m}.png").is_file():  # the compact picture evaluate drew
            parts.append(f"<h3>{_e(ev.label(m))}</h3>" + _img(png.read_bytes(), f"{ev.label(m)}: confusion matrix"))
        pairs = plots.most_confused(matrix, ev.classes, 10)
        rows = "".join(f"<tr><td>{_e(t)}</td><td>{_e(p)}</td><td>{c}</td><td>{s:.1%}</td></tr>" for t, p, c, s in pairs)
        parts.append(_table(" class='pairs'", ["true", "predicted", "images", "share of true class"], rows) + "</div>")
    return ("<section id='confusion'><h2>Confusion, row-normalised</h2><p class='note'>Each row: where the true "
            f"class's images went. Full matrices: confusion_*.npz.</p>{''.join(parts)}</section>")


def examples_section(ev: Evaluation) -> str:
    folder = ev.dir / "examples"
    if not ev.examples:
        return "<section id='examples'><h2>Example errors</h2><p>No example images were written.</p></section>"
    parts, seen = [], set()
    for group, rows in ev.examples.items():
        kind, model, *pair = group.split("/")
        model_pred = ev.pred.get(model)
        if model_pred is None:
            continue
        title = {"confident": f"{ev.label(model)}: most confident mistakes",
                 "flips": f"{ev.label(model)} wrong where the champion is right"}.get(kind) or (
            f"{ev.label(model)}: {ev.classes[int(pair[0])]} taken for {ev.classes[int(pair[1])]}")
        figs = []
        for r in rows:
            jpg = folder / f"{r}.jpg"
            if r in seen or not jpg.is_file():  # each image once: the page stays small
                continue
            seen.add(r)
            t, p = ev.classes[int(ev.y[r])], ev.classes[int(model_pred[r])]
            conf = ev.conf.get(model)
            caption = f"{t} → {p}" + (f" ({conf[r]:.0%})" if conf is not None else "")
            figs.append(f"<figure>{_img(jpg.read_bytes(), f'test image {r}: true {t}, predicted {p}', 'thumb', 'jpeg')}"
                        f"<figcaption>{_e(caption)}</figcaption></figure>")
        if figs:
            parts.append(f"<h3>{_e(title)}</h3><div>{''.join(figs)}</div>")
    return ("<section id='examples'><h2>Example errors</h2><p class='note'>Captions: true → predicted "
            f"(the model's confidence).</p>{''.join(parts)}</section>")


def calibration_section(ev: Evaluation) -> str:
    if not ev.conf:
        return "<section id='calibration'><h2>Confidence</h2><p>No confidences recorded.</p></section>"
    fig, ax = plots._pyplot().subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", label="perfect")
    rows = []
    for m, conf in ev.conf.items():
        counts, acc, mean_conf = stats.reliability(conf, ev.correct(m))
        seen = counts > 0
        ax.plot(mean_conf[seen], acc[seen], marker="o", label=ev.label(m))
        ece = stats.expected_calibration_error(conf, ev.correct(m))
        rows.append(f"<tr><td>{_e(ev.label(m))}</td><td class='ece'>{ece:.4f}</td><td>{float(conf.mean()):.4f}</td>"
                    f"<td>{float(ev.correct(m).mean()):.4f}</td></tr>")
    ax.set_xlabel("confidence"), ax.set_ylabel("accuracy"), ax.legend(), ax.grid(alpha=.3)
    ax.set_title("reliability (15 bins)")
    table = _table("", ["model", "ECE (15 bins)", "mean confidence", "accuracy"], "".join(rows))
    return f"<section id='calibration'><h2>Confidence</h2>{table}{_img(_png(fig), 'reliability diagram')}</section>"


def curves_section(ev: Evaluation) -> str:
    if not ev.histories:
        return "<section id='curves'><h2>Learning curves</h2><p>No training history found.</p></section>"
    fig, axes = plots._pyplot().subplots(1, 3, figsize=(13, 3.6))
    for m, hist in ev.histories.items():
        epochs = [h["epoch"] for h in hist]
        val = [h["val_accuracy"] for h in hist]
        best = int(np.argmax(val))
        line, = axes[0].plot(epochs, val, marker="o", label=f"{m} val")
        axes[0].plot(epochs, [h["train_accuracy"] for h in hist], linestyle=":", color=line.get_color(),
                     label=f"{m} train")
        axes[0].plot([epochs[best]], [val[best]], marker="*", markersize=14, color=line.get_color(), linestyle="")
        axes[0].annotate(f"best {epochs[best]}", (epochs[best], val[best]), textcoords="offset points", xytext=(4, 4))
        axes[1].plot(epochs, [h["val_loss"] for h in hist], marker="o", color=line.get_color(), label=f"{m} val")
        axes[1].plot(epochs, [h["train_loss"] for h in hist], linestyle=":", color=line.get_color(), label=f"{m} train")
        axes[2].plot(epochs, [h.get("lr") for h in hist], marker="o", color=line.get_color(), label=m)
    for ax, what in zip(axes, ("accuracy (★ best epoch)", "loss", "learning rate"), strict=True):
        ax.set_xlabel("epoch"), ax.set_title(what), ax.legend(fontsize=7), ax.grid(alpha=.3)
    axes[2].set_yscale("log")
    return f"<section id='curves'><h2>Learning curves</h2>{_img(_png(fig), 'learning curves')}</section>"


def history_section(history: list[dict[str, Any]] | None) -> str:
    if not history:
        return "<section id='history'><h2>History</h2><p>No registry history yet.</p></section>"
    fig, ax = plots._pyplot().subplots(figsize=(7, 3.2))
    xs = list(range(len(history)))
    for key in ("accuracy", "macro_f1"):
        ax.plot(xs, [h.get(key) if h.get(key) is not None else np.nan for h in history], marker="o", label=key)
    for i, h in enumerate(history):
        if h.get("champion") and h.get("accuracy") is not None:
            ax.plot([i], [h["accuracy"]], marker="*", markersize=16, color="gold", linestyle="", label="champion")
    ax.set_xticks(xs, [f"v{h['version']}" for h in history], rotation=45 if len(xs) > 12 else 0, fontsize=7)
    ax.set_ylabel("test"), ax.legend(fontsize=7), ax.grid(alpha=.3)
    rows = "".join(f"<tr><td>v{_e(h['version'])}{' ★' if h.get('champion') else ''}</td>"
                   f"<td>{_f(h.get('accuracy'), '.4f')}</td><td>{_f(h.get('macro_f1'), '.4f')}</td></tr>"
                   for h in reversed(history))
    return (f"<section id='history'><h2>History</h2>{_img(_png(fig), 'test accuracy and macro-F1 by version')}"
            + _table(" class='sortable'", ["version", "accuracy", "macro-F1"], rows) + "</section>")


def summary_table(ev: Evaluation) -> str:
    rows = "".join(f"<tr><td>{_e(ev.label(m))}</td><td>{_f(s.get('accuracy'), '.4f')}</td>"
                   f"<td>{_f(s.get('macro_f1'), '.4f')}</td><td>{_f(s.get('ece'), '.4f')}</td>"
                   f"<td>{s.get('n_test')}</td>"
                   f"<td>{_e(s.get('predictions', ''))}</td></tr>" for m, s in ev.models.items())
    c = ev.comparison
    paired = (f"<p>{_e(c['pair'])}: {c['accuracy_diff']:+.4f}, {c['ci_level']:.0%} bootstrap CI [{c['ci_low']:+.4f}, "
              f"{c['ci_high']:+.4f}], McNemar p = {c['mcnemar_p']:.3g}.</p>") if c else ""
    return _table(" id='models'", ["model", "accuracy", "macro-F1", "ECE", "test images", "predictions"], rows) + paired


def render(eval_dir: Path, decision: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
           links: dict[str, str] | None = None, page_dir: Path | None = None) -> str:
    """The report page for the evaluation in `eval_dir`; `page_dir` (default `eval_dir`) is where the page
    will live, against which relative links are checked."""
    ev = Evaluation(eval_dir)
    cand, base = _roles(ev, decision)
    body = "".join([
        "<h1>Evaluation on the test split</h1>", decision_section(decision, links or {}, page_dir or eval_dir),
        summary_table(ev), per_class_section(ev, cand, base, decision), flips_section(ev, cand),
        confusion_section(ev), examples_section(ev), calibration_section(ev), curves_section(ev),
        history_section(history),
    ])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Headstart evaluation</title><style>{STYLE}"
            f"</style></head><body>{body}<script>{SORT_JS}</script></body></html>\n")


def write(eval_dir: Path, out: Path, decision: dict[str, Any] | None = None,
          history: list[dict[str, Any]] | None = None, links: dict[str, str] | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(eval_dir, decision, history, links, page_dir=out.parent), encoding="utf-8")
    return out


def version_history(tracking: TrackingConfig, limit: int = 50, current: str | None = None) -> list[dict[str, Any]]:
    """Each registered version's test accuracy and macro-F1 (its winner's `metric.*` tags), oldest first,
    the champion marked; versions still pending or incomplete are left out, except `current` (the version
    this run is recording, pending until register completes it). The MLflow and Kubeflow UIs cannot chart
    one metric across model versions: this is that chart's data."""
    from headstart.registry import model_registry as registry

    c = registry.client(tracking)
    name = tracking.registered_model
    try:
        champion = c.get_model_version_by_alias(name, "champion").version
    except Exception:  # noqa: BLE001 - no alias (or no model) yet: nothing is champion
        champion = None
    versions = c.search_model_versions(f"name='{name}'", max_results=max(limit * 2, 100))
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        if mv.tags.get(registry.REGISTRATION_TAG) == registry.PENDING and str(mv.version) != current:
            continue
        raw = {k: mv.tags.get(f"metric.{mv.tags.get('headstart.winner')}.{k}") for k in ("accuracy", "macro_f1")}
        rows.append({"version": str(mv.version), "created": int(mv.creation_timestamp or 0),
                     **{k: float(v) if v not in (None, "") else None for k, v in raw.items()},
                     "champion": str(mv.version) == str(champion)})
    return rows[-limit:]
