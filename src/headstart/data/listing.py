"""A split's samples as a dataset lists them, without decoding an image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Listing:
    """Names ("<split>/<class>/<file>") and labels in load order (class, then name: the rows `load` returns),
    and each row's position in the split's stream (where scoring_batches delivers it)."""

    names: list[str]
    labels: np.ndarray  # int64
    positions: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.names)
