"""Findings and check results: the one shape every check reports in.

A check emits `Finding`s (what is wrong, and with which file); `assemble` turns them into one
`CheckResult` per named check, with the configured severity, so the report, the JSON and the
CLI table all read the same records, and a check with nothing to say still shows as `pass`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from headstart.validation.config import ValidateConfig

Status = Literal["pass", "warn", "fail", "n/a"]  # n/a: the check does not apply to this dataset or run

# name -> (group, what it guards). Order is the report's order.
CHECKS: dict[str, tuple[str, str]] = {
    "decode": ("integrity", "every file decodes (PIL verify, then a full load) within the pixel limit"),
    "shards": (
        "integrity",
        "every shard matches index.json (size, sha256, sample and class counts) and reads to the end",
    ),
    "dimensions": ("integrity", "width and height within [min, max]"),
    "mode": ("integrity", "image mode is one of allowed_modes"),
    "file_names": ("layout", "no '..', control characters, backslashes or odd whitespace in names"),
    "symlinks": ("layout", "no symlink leaves the data folder or dangles"),
    "stray_files": ("layout", "only image files, and only inside split/class folders"),
    "splits": ("layout", "exactly the configured splits, none missing or empty"),
    "labels": ("labels", "class folders equal the label set"),
    "class_counts": ("labels", "every class in every split with at least min_images_per_class"),
    "duplicates_across_splits": ("leakage", "no identical file in two splits"),
    "near_duplicates_across_splits": ("leakage", "no resized or re-encoded copy in two splits"),
    "duplicates_within_split": ("leakage", "identical files within a split below a fraction"),
    "class_balance": ("distribution", "largest/smallest class ratio per split within bound"),
    "pixel_stats": ("distribution", "per-split intensity mean and std per channel within bounds"),
    "label_drift": ("drift", "label distribution close to the last accepted version (PSI)"),
    "pixel_drift": ("drift", "intensity mean/std close to the last accepted version"),
}


@dataclass(frozen=True)
class Finding:
    """One thing wrong. `file` is a path relative to the data folder (a folder ends with '/')."""

    check: str
    reason: str
    file: str | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    group: str
    status: Status
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    files: tuple[dict[str, str], ...] = ()
    n_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = list(self.files)
        return data


def assemble(
    findings: list[Finding],
    numbers: dict[str, dict[str, Any]],
    cfg: ValidateConfig,
    totals: dict[str, int],
    not_applicable: dict[str, str],
) -> tuple[CheckResult, ...]:
    """One result per check in CHECKS: severity when anything was found, else pass, or n/a (with the reason
    from `not_applicable`) for a check with nothing to look at, so a report never says "ok" about it.

    `totals` carries counts known to exceed the findings listed (GX lists only the first N).
    """
    by_check: dict[str, dict[str, list[str]]] = {name: {} for name in CHECKS}
    for finding in findings:
        if finding.check not in by_check:
            raise KeyError(f"unknown check {finding.check!r}")
        reasons = by_check[finding.check].setdefault(finding.file or "", [])
        if finding.reason not in reasons:
            reasons.append(finding.reason)
    results = []
    for name, (group, guards) in CHECKS.items():
        # one entry per offending file (or folder), its reasons joined: counts are of files
        found = [(file, "; ".join(sorted(reasons))) for file, reasons in sorted(by_check[name].items())]
        total = max(len(found), totals.get(name, 0))
        why = not_applicable.get(name)
        status: Status = getattr(cfg.severity, name) if found else "n/a" if why else "pass"
        results.append(
            CheckResult(
                name=name,
                group=group,
                status=status,
                message=f"n/a: {why}" if status == "n/a" else _message(found, guards, total),
                numbers=numbers.get(name, {}),
                files=tuple(
                    {"file": file, "reason": reason} for file, reason in found[: cfg.max_listed_files]
                ),
                n_files=total,
            )
        )
    return tuple(results)


def _message(found: list[tuple[str, str]], guards: str, total: int) -> str:
    """Count, then the first three offenders with their reasons: enough to act on from a log line."""
    if not found:
        return f"ok: {guards}"
    shown = [f"{file}: {reason}" if file else reason for file, reason in found[:3]]
    more = f" (+{total - len(shown)} more)" if total > len(shown) else ""
    return f"{total} problem{'s' if total > 1 else ''}: " + "; ".join(shown) + more
