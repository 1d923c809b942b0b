"""Validate step: stop a bad dataset version before any training, with a report to act on.

Takes an ImageFolder or a sharded dataset version (index.json + tar shards, streamed one shard
per worker task; a shard that disagrees with its index fails the `shards` check).
Checks layout and labels, decodes every image (in parallel, cached by content hash), runs the
GX suite over the manifest, looks for leakage, imbalance and drift against the last accepted
version, and writes report.json, report.html, summary.json, manifest.csv and data_docs/.
It returns the verdict and never raises on failed checks: the caller decides what a failure
stops. A missing or unreadable data folder is a DataError.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

from headstart.config import TrackingConfig
from headstart.data.dataset import open_dataset
from headstart.runtime import give_back_freed
from headstart.validation import distribution, leakage
from headstart.validation.cache import ResultCache
from headstart.validation.config import ValidateConfig, config_from_params  # noqa: F401  (the drivers' builder)
from headstart.validation.drift import drift_checks
from headstart.validation.expectations import run_suite
from headstart.validation.findings import assemble
from headstart.validation.labels import class_counts, expected_labels, label_checks
from headstart.validation.layout import scan_layout
from headstart.validation.manifest import STAT_COLUMNS, THUMB_COLUMNS, integrity_numbers, write_manifest
from headstart.validation.report import class_chart, render_html, sample_thumbs
from headstart.validation.result import ValidationResult
from headstart.validation.scan import scan_entries
from headstart.validation.state import load_accepted, save_accepted
from headstart.validation.summary import summarize, with_checks, write_json


def run(
    cfg: ValidateConfig, data_dir: Path, out_dir: Path, tracking: TrackingConfig | None = None
) -> ValidationResult:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    cache = ResultCache(cfg.cache_dir, cfg.max_pixels) if cfg.cache_dir is not None else None
    sharded = open_dataset(data_dir).form == "packed"  # each form has its own scanner (shard integrity)
    if sharded:
        from headstart.validation.shardscan import scan_shards

        layout, manifest, scan, thumbs = scan_shards(
            data_dir, cfg.splits, cfg.extensions, cfg.max_pixels, cfg.workers, cache
        )
    else:
        layout = scan_layout(data_dir, cfg.splits, cfg.extensions)
        manifest, scan = scan_entries(layout.entries, cfg.max_pixels, cfg.workers, cache)
        del layout.entries[:]  # the manifest holds what the checks need, compactly
    give_back_freed()  # the per-file entries and scan chunks are gone: the later peaks need not stand on them

    previous = load_accepted(cfg.state_dir)
    if previous is None and tracking is not None:
        from headstart.validation.tracking import load_accepted_from_mlflow

        previous = load_accepted_from_mlflow(tracking)
    labels, source = expected_labels(cfg, previous, layout)
    counts = class_counts(manifest)
    stats = distribution.pixel_stats(manifest)

    current = summarize(manifest, labels, counts, stats, {})
    findings, numbers = list(layout.findings), integrity_numbers(manifest)
    for found, nums in (
        label_checks(cfg, layout, counts, labels, source),
        leakage.exact_duplicates(cfg, manifest),
        leakage.near_duplicates(cfg, manifest),
        distribution.class_balance(cfg, counts, labels),
        distribution.pixel_checks(cfg, stats),
        drift_checks(cfg, current, previous),
    ):
        findings += found
        numbers.update(nums)
    manifest = manifest.drop(columns=[*THUMB_COLUMNS, *STAT_COLUMNS])  # read by the checks above only
    give_back_freed()  # the checks' per-image arrays (thumbnails, digests, the k-d tree) are freed by now

    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    suite = run_suite(cfg, manifest, labels, docs_dir)
    give_back_freed()  # GX's copy of the manifest's columns and its per-row metrics
    not_applicable = {} if sharded else {"shards": "an ImageFolder has no shards"}
    if previous is None:
        first = "no earlier accepted version to compare with (first run)"
        not_applicable |= {"label_drift": first, "pixel_drift": first}
    checks = assemble(findings + suite.findings, numbers, cfg, suite.totals, not_applicable)
    summary = with_checks(current, {c.name: c.status for c in checks})
    result = ValidationResult(
        passed=summary["passed"],
        checks=checks,
        counts=counts,
        n_images=len(manifest),
        labels=labels,
        label_source=source,
        fingerprint=summary["fingerprint"],
        scan=asdict(scan),
    )
    report = result.to_dict() | {"expectations": suite.expectations}
    reports = {
        "report_json": write_json(out_dir / "report.json", report),
        "summary_json": write_json(out_dir / "summary.json", summary),
        "manifest_csv": write_manifest(manifest, out_dir / "manifest.csv"),
        "report_html": out_dir / "report.html",
        "data_docs": suite.docs_index or docs_dir,
    }
    give_back_freed()  # manifest.csv's chunks (their hex and text columns): the report's pages come next
    if not sharded:
        sample_split = next((s for s in cfg.splits if s in counts), None)
        thumbs = sample_thumbs(manifest, data_dir, sample_split) if sample_split else {}
    reports["report_html"].write_text(
        render_html(result, class_chart(counts, cfg.splits), thumbs), encoding="utf-8"
    )
    if result.passed and cfg.state_dir is not None:
        save_accepted(cfg.state_dir, summary)
    run_id = None
    if tracking is not None:
        from headstart.validation.tracking import log_run

        run_id = log_run(tracking, out_dir, result)
    return replace(result, reports={k: str(v) for k, v in reports.items()}, mlflow_run_id=run_id)


def format_failures(result: ValidationResult, width: int = 160) -> str:
    """Failed and warned checks as a compact table for the CLI; one line when all passed."""
    verdict = "PASSED" if result.passed else "FAILED"
    head = (
        f"validation {verdict}: {len(result.failed)} failed, {len(result.warned)} warned "
        f"of {len(result.checks)} checks on {result.n_images} images"
    )
    bad = [c for c in result.checks if c.status in ("fail", "warn")]
    if not bad:
        return head
    name_w = max(len(c.name) for c in bad)
    lines = [head, f"{'status':6}  {'check':{name_w}}  {'files':>5}  problem"]
    for c in sorted(bad, key=lambda c: (c.status != "fail", c.name)):
        line = f"{c.status:6}  {c.name:{name_w}}  {c.n_files:>5}  {c.message}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    if "report_html" in result.reports:
        lines.append(f"report: {result.reports['report_html']}")
    return "\n".join(lines)
