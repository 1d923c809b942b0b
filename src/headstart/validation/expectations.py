"""The Great Expectations suite over the manifest, and its Data Docs.

Row-level rules (decodes, size, mode, split and label names) are stated once, as GX
expectations; their results become findings for the named checks, and GX renders the same
results as Data Docs. GX runs in an ephemeral context: nothing is written but the docs.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from headstart.validation.config import ValidateConfig
from headstart.validation.findings import Finding

SUITE = "headstart_manifest"


@dataclass(frozen=True)
class SuiteOutcome:
    findings: list[Finding]
    totals: dict[str, int]
    expectations: list[dict[str, Any]]
    docs_index: Path | None


def _expectations(cfg: ValidateConfig, labels: list[str]) -> list[Any]:
    import great_expectations as gx

    e = gx.expectations
    items = [
        e.ExpectTableRowCountToBeBetween(min_value=1, meta={"check": "splits"}),
        e.ExpectColumnValuesToBeUnique(column="path", meta={"check": "file_names"}),
        e.ExpectColumnValuesToBeInSet(column="split", value_set=list(cfg.splits), meta={"check": "splits"}),
        e.ExpectColumnValuesToBeNull(column="error", meta={"check": "decode"}),
        e.ExpectColumnValuesToBeBetween(column="bytes", min_value=1, meta={"check": "decode"}),
        e.ExpectColumnValuesToBeBetween(
            column="width", min_value=cfg.min_width, max_value=cfg.max_width, meta={"check": "dimensions"}
        ),
        e.ExpectColumnValuesToBeBetween(
            column="height", min_value=cfg.min_height, max_value=cfg.max_height, meta={"check": "dimensions"}
        ),
        e.ExpectColumnValuesToBeInSet(
            column="mode", value_set=list(cfg.allowed_modes), meta={"check": "mode"}
        ),
    ]
    if labels:
        items.append(
            e.ExpectColumnValuesToBeInSet(column="label", value_set=labels, meta={"check": "labels"})
        )
    return items


def _reason(column: str | None, value: Any, error: Any, cfg: ValidateConfig) -> str:
    if column in ("error", "bytes") and pd.notna(error):
        return str(error)
    bounds = {"width": (cfg.min_width, cfg.max_width), "height": (cfg.min_height, cfg.max_height)}
    if column in bounds:
        return f"{column} {value} px outside [{bounds[column][0]}, {bounds[column][1]}]"
    if column == "mode":
        return f"mode {value!r} not in allowed_modes {list(cfg.allowed_modes)}"
    if column == "label":
        return f"label {value!r} not in the label set"
    return f"{column} value {value!r} not expected"


def run_suite(
    cfg: ValidateConfig, manifest: pd.DataFrame, labels: list[str], docs_dir: Path
) -> SuiteOutcome:
    """Validate the manifest with GX; build Data Docs into docs_dir."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints each frame under 1 GB by hashing every value, which turns the unique paths into
        # Python strings: ~100 bytes an image at validate's peak, for a batch id this ephemeral context never reads
        pandas_execution_engine.HASH_THRESHOLD = 0

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            "headstart",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            },
        )
        batch = (
            context.data_sources.add_pandas("manifest")
            .add_dataframe_asset("images")
            .add_batch_definition_whole_dataframe("all")
        )
        expectations = _expectations(cfg, labels)
        suite = context.suites.add(gx.ExpectationSuite(name=SUITE, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=SUITE, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=SUITE,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["headstart"])],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": cfg.max_listed_files,
                    "unexpected_index_column_names": ["path"],
                },
            )
        )
        # only the columns the suite reads: GX copies the frame it is given (~0.2 KB an image for all of them)
        read = dict.fromkeys(["path", *(getattr(e, "column", None) for e in expectations)])
        result = checkpoint.run(batch_parameters={"dataframe": manifest.loc[:, [c for c in read if c]]})
    findings: list[Finding] = []
    totals: dict[str, int] = {}
    summaries = []
    for res in next(iter(result.run_results.values())).results:
        config = res.expectation_config
        check, column = config.meta["check"], config.kwargs.get("column")
        count = int(res.result.get("unexpected_count") or 0)
        summaries.append(
            {
                "expectation": config.type,
                "column": column,
                "check": check,
                "success": bool(res.success),
                "unexpected_count": count,
            }
        )
        if res.success:
            continue
        if res.exception_info and res.exception_info.get("raised_exception"):
            findings.append(
                Finding(check, f"GX {config.type} raised: {res.exception_info['exception_message']}")
            )
            continue
        rows = res.result.get("partial_unexpected_index_list") or []
        # only the listed rows, looked up once: indexing the whole manifest by path would copy it
        picked = manifest.loc[manifest["path"].isin({item["path"] for item in rows}), ["path", "error"]]
        errors = dict(picked.drop_duplicates("path").itertuples(index=False))
        if not rows:
            observed = res.result.get("observed_value")
            what = "no images found" if config.type == "expect_table_row_count_to_be_between" else "failed"
            findings.append(Finding(check, f"{what} (GX {config.type}: observed {observed})"))
        for item in rows:
            path = item["path"]
            findings.append(Finding(check, _reason(column, item.get(column), errors.get(path), cfg), path))
        totals[check] = max(totals.get(check, 0), count)
    index = docs_dir / "index.html"
    return SuiteOutcome(findings, totals, summaries, index if index.is_file() else None)
