"""Knobs for the validate step: thresholds and the severity of every named check.

All of it comes from the `validate:` section of params.yaml, so a team can tighten a bound or
turn a failing check into a warning without touching code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from headstart.config import Frozen
from headstart.data.suffixes import IMAGE_SUFFIXES

Severity = Literal["fail", "warn"]


class Severities(Frozen):
    """What a check that finds something does to the run: `fail` stops it, `warn` reports only."""

    decode: Severity = "fail"
    shards: Severity = "fail"
    dimensions: Severity = "fail"
    mode: Severity = "fail"
    file_names: Severity = "fail"
    symlinks: Severity = "fail"
    stray_files: Severity = "fail"
    splits: Severity = "fail"
    labels: Severity = "fail"
    class_counts: Severity = "fail"
    duplicates_across_splits: Severity = "fail"
    near_duplicates_across_splits: Severity = "fail"
    duplicates_within_split: Severity = "warn"
    class_balance: Severity = "fail"
    pixel_stats: Severity = "fail"
    label_drift: Severity = "fail"
    pixel_drift: Severity = "fail"


class ValidateConfig(Frozen):
    """The `validate:` section of params.yaml. Pixel statistics are on a 0-1 intensity scale."""

    splits: tuple[str, ...] = Field(("train", "val", "test"), min_length=1)
    label_set: tuple[str, ...] | None = None
    min_images_per_class: int = Field(1, ge=0)
    min_width: int = Field(8, ge=1)
    max_width: int = Field(1024, ge=1)
    min_height: int = Field(8, ge=1)
    max_height: int = Field(1024, ge=1)
    allowed_modes: tuple[str, ...] = Field(("L", "RGB"), min_length=1)
    max_pixels: int = Field(16_777_216, ge=1)
    near_duplicate_max_rms: float = Field(0.01, ge=0.0, le=1.0)
    near_duplicate_max_hamming: int = Field(12, ge=0, le=64)
    duplicate_within_split_max_fraction: float = Field(0.01, ge=0.0, le=1.0)
    max_class_ratio: float = Field(5.0, ge=1.0)
    pixel_mean_min: float = Field(0.02, ge=0.0, le=1.0)
    pixel_mean_max: float = Field(0.98, ge=0.0, le=1.0)
    pixel_std_min: float = Field(0.02, ge=0.0, le=0.5)
    pixel_std_max: float = Field(0.5, ge=0.0, le=0.5)
    drift_label_psi_max: float = Field(0.1, ge=0.0)
    drift_pixel_mean_max: float = Field(0.05, ge=0.0, le=1.0)
    drift_pixel_std_max: float = Field(0.05, ge=0.0, le=0.5)
    severity: Severities = Severities()
    workers: int = Field(0, ge=0, description="decode processes; 0 means one per CPU")
    cache_dir: Path | None = Path(".headstart/cache/validate")
    state_dir: Path | None = Path(".headstart/state/validate")
    max_listed_files: int = Field(20, ge=1)

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
