"""What the validate step returns: plain data the drivers print, write or log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headstart.validation.findings import CheckResult


@dataclass(frozen=True)
class ValidationResult:
    """`passed` is False when any check has status fail; warnings never stop a run."""

    passed: bool
    checks: tuple[CheckResult, ...]
    counts: dict[str, dict[str, int]]
    n_images: int
    labels: list[str]
    label_source: str
    fingerprint: str
    reports: dict[str, str] = field(default_factory=dict)
    scan: dict[str, int] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warned(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The report.json body: no clock, no absolute path, no cache statistics, so it is reproducible."""
        return {
            "passed": self.passed,
            "n_images": self.n_images,
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "label_source": self.label_source,
            "counts": self.counts,
            "n_failed": len(self.failed),
            "n_warned": len(self.warned),
            "checks": [c.to_dict() for c in self.checks],
        }
