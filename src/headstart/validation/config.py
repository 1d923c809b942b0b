"""Knobs for the validate step: thresholds and the severity of every named check.

All of it comes from the `validate:` section of params.yaml, so a team can tighten a bound or
turn a failing check into a warning without touching code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from headstart.config import Frozen, from_section
from headstart.data.suffixes import IMAGE_SUFFIXES

Severity = Literal["fail", "warn"]


class Severities(Frozen):
    """What a check that finds something does to the run: `fail` stops it, `warn` reports only.
    Each is set in params.yaml (validate.severity), the one place a severity's default lives."""

    decode: Severity
    shards: Severity
    dimensions: Severity
    mode: Severity
    file_names: Severity
    symlinks: Severity
    stray_files: Severity
    splits: Severity
    labels: Severity
    class_counts: Severity
    duplicates_across_splits: Severity
    near_duplicates_across_splits: Severity
    duplicates_within_split: Severity
    class_balance: Severity
    pixel_stats: Severity
    label_drift: Severity
    pixel_drift: Severity


class ValidateConfig(Frozen):
    """The `validate:` section of params.yaml, which holds each knob's one default (none here).
    Pixel statistics are on a 0-1 intensity scale."""

    splits: tuple[str, ...] = Field(min_length=1)
    label_set: tuple[str, ...] | None
    min_images_per_class: int = Field(ge=0)
    min_width: int = Field(ge=1)
    max_width: int = Field(ge=1)
    min_height: int = Field(ge=1)
    max_height: int = Field(ge=1)
    allowed_modes: tuple[str, ...] = Field(min_length=1)
    max_pixels: int = Field(ge=1)
    near_duplicate_max_rms: float = Field(ge=0.0, le=1.0)
    near_duplicate_max_hamming: int = Field(ge=0, le=64)
    duplicate_within_split_max_fraction: float = Field(ge=0.0, le=1.0)
    max_class_ratio: float = Field(ge=1.0)
    pixel_mean_min: float = Field(ge=0.0, le=1.0)
    pixel_mean_max: float = Field(ge=0.0, le=1.0)
    pixel_std_min: float = Field(ge=0.0, le=0.5)
    pixel_std_max: float = Field(ge=0.0, le=0.5)
    drift_label_psi_max: float = Field(ge=0.0)
    drift_pixel_mean_max: float = Field(ge=0.0, le=1.0)
    drift_pixel_std_max: float = Field(ge=0.0, le=0.5)
    severity: Severities
    workers: int = Field(ge=0, description="decode processes; 0 means one per CPU")
    cache_dir: Path | None
    state_dir: Path | None
    max_listed_files: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> ValidateConfig:
        for low, high in (
            ("min_width", "max_width"),
            ("min_height", "max_height"),
            ("pixel_mean_min", "pixel_mean_max"),
            ("pixel_std_min", "pixel_std_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        for name in ("splits", "label_set", "allowed_modes"):
            values = getattr(self, name) or ()
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {list(values)}")
        if self.label_set is not None and not self.label_set:
            raise ValueError("label_set is empty; leave it out (null) to use the previous accepted labels")
        return self

    @property
    def extensions(self) -> frozenset[str]:
        """The suffixes training reads (headstart.data.suffixes); anything else in a class folder is stray.
        Not a knob: a list of its own here would let validation pass files training skips, or the reverse."""
        return IMAGE_SUFFIXES


def config_from_params(params: dict[str, Any], **changes: Any) -> ValidateConfig:
    """The `validate:` section, checked; `changes` (tests, benchmarks) apply last, `severity={...}` key by key."""
    return from_section(ValidateConfig, params, "validate", **changes)
