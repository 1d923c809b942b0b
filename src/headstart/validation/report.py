"""The human report: one self-contained HTML page, plus the JSON twin.

Everything is inline (CSS, a base64 PNG chart, base64 thumbnails) and nothing links out, so
the page renders offline and inside the Kubeflow UI's sandboxed HTML viewer.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from headstart.validation.manifest import decoded_mask
from headstart.validation.result import ValidationResult

THUMBS_PER_CLASS = 4
THUMB_PX = 56
COLORS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "n/a": "#6e7781"}
CSS = """
body{font-family:system-ui,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #d0d7de;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f6f8fa}.badge{color:#fff;border-radius:10px;padding:1px 8px;
font-weight:600;font-size:12px}code{font-size:12px;word-break:break-all}details{margin:2px 0}
.thumbs img{image-rendering:pixelated;margin:2px;border:1px solid #d0d7de}.muted{color:#656d76}
"""


def _png_uri(buf: io.BytesIO) -> str:
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def class_chart(counts: dict[str, dict[str, int]], split_order: tuple[str, ...] = ()) -> str | None:
    """Grouped horizontal bars, one group per class, one bar per split, as a data: URI."""
    if not counts:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = sorted({c for per in counts.values() for c in per})
    splits = sorted(counts, key=lambda s: (split_order.index(s) if s in split_order else len(split_order), s))
    fig = Figure(figsize=(8, 0.35 * len(labels) * max(1, len(splits)) / 2 + 1.2), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / len(splits)
    for i, split in enumerate(splits):
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [counts[split].get(c, 0) for c in labels], height=height, label=split)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return _png_uri(buf)


def thumb_uri(data: bytes) -> str | None:
    """A small PNG data URI of an image's bytes, or None when it cannot be shown."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail((THUMB_PX, THUMB_PX))
            thumb = img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode)
            if max(thumb.size) < THUMB_PX:
                scale = THUMB_PX // max(thumb.size)
                thumb = thumb.resize((thumb.width * scale, thumb.height * scale), Image.Resampling.NEAREST)
            thumb.save(buf := io.BytesIO(), format="PNG", optimize=True)
            return _png_uri(buf)
    except Exception:  # noqa: BLE001 - a sample that cannot be shown is simply left out
        return None


def sample_thumbs(manifest: pd.DataFrame, data_dir: Path, split: str) -> dict[str, list[tuple[str, str]]]:
    """A few decodable images per class from one split of an ImageFolder: {label: [(path, data URI)]}."""
    rows = manifest.loc[decoded_mask(manifest) & (manifest["split"] == split).to_numpy(), ["path", "label"]]
    out: dict[str, list[tuple[str, str]]] = {}
    for label, group in rows.groupby("label", sort=True):
        for path in group["path"].sort_values().head(THUMBS_PER_CLASS):
            try:
                uri = thumb_uri((data_dir / path).read_bytes())
            except OSError:
                continue
            if uri:
                out.setdefault(str(label), []).append((path, uri))
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _check_rows(result: ValidationResult) -> str:
    rows = []
    order = {"fail": 0, "warn": 1, "pass": 2, "n/a": 3}
    for c in sorted(result.checks, key=lambda c: order[c.status]):  # stable: CHECKS order within a status
        files = "".join(f"<li><code>{_e(f['file'])}</code> {_e(f['reason'])}</li>" for f in c.files)
        more = f"<li class=muted>and {c.n_files - len(c.files)} more</li>" if c.n_files > len(c.files) else ""
        listing = (
            f"<details><summary>{c.n_files} file(s)</summary><ul>{files}{more}</ul></details>"
            if c.files
            else ""
        )
        numbers = _e(json.dumps(c.numbers, sort_keys=True)) if c.numbers else ""
        numbers = f"<details><summary>numbers</summary><code>{numbers}</code></details>" if numbers else ""
        badge = f"<span class=badge style='background:{COLORS[c.status]}'>{c.status}</span>"
        rows.append(
            f"<tr><td>{badge}</td><td>{_e(c.group)}</td><td><b>{_e(c.name)}</b></td>"
            f"<td>{_e(c.message)}{listing}{numbers}</td></tr>"
        )
    return "".join(rows)


def render_html(result: ValidationResult, chart: str | None, thumbs: dict[str, list[tuple[str, str]]]) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    color = COLORS["pass" if result.passed else "fail"]
    splits = sorted(result.counts)
    head = "".join(f"<th>{_e(s)}</th>" for s in splits)
    count_rows = "".join(
        f"<tr><td>{_e(c)}</td>" + "".join(f"<td>{result.counts[s].get(c, 0)}</td>" for s in splits) + "</tr>"
        for c in sorted({c for per in result.counts.values() for c in per})
    )
    chart_html = f"<img alt='class distribution' src='{chart}'>" if chart else "<p class=muted>no images</p>"
    thumb_html = "".join(
        f"<p><b>{_e(label)}</b><br><span class=thumbs>"
        + "".join(f"<img alt='{_e(p)}' title='{_e(p)}' src='{uri}'>" for p, uri in items)
        + "</span></p>"
        for label, items in thumbs.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Headstart data validation: {verdict}</title>
<style>{CSS}</style></head><body>
<h1>Data validation <span class=badge style="background:{color}">{verdict}</span></h1>
<p>{result.n_images} images, {len(result.labels)} classes (label set from {_e(result.label_source)});
{len(result.failed)} failed and {len(result.warned)} warned of {len(result.checks)} checks.
Dataset fingerprint <code>{result.fingerprint[:16]}</code>. Every expectation's result is in
<code>report.json</code>; the Great Expectations Data Docs are written next to this report locally
(<code>data_docs/index.html</code>), not logged to MLflow.</p>
<h2>Checks</h2><table><tr><th>status</th><th>group</th><th>check</th><th>result</th></tr>{_check_rows(result)}</table>
<h2>Class distribution</h2>{chart_html}
<table><tr><th>class</th>{head}</tr>{count_rows}</table>
<h2>Samples</h2>{thumb_html or "<p class=muted>no decodable images</p>"}
</body></html>
"""
