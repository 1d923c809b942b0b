"""Preprocessing presets shared by training, evaluation and the served model.

A preset turns an encoded image into a fixed-size uint8 array (decode, colour mode, resize),
and a uint8 batch into the normalised float tensor the backbone expects. Serving calls the
very same two functions, so it sees exactly what training saw.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart.errors import DataError


@dataclass(frozen=True)
class Preset:
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def decode(self, source: str | Path | bytes | Image.Image) -> np.ndarray:
        """Encoded image (path, bytes or PIL) -> uint8 array (image_size, image_size, channels)."""
        try:
            if isinstance(source, Image.Image):
                img = source
            elif isinstance(source, bytes | bytearray):
                img = Image.open(io.BytesIO(source))
            else:
                img = Image.open(source)
            img = img.convert("L" if self.channels == 1 else "RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            where = source if isinstance(source, str | Path) else "input image"
            raise DataError(f"{where}: cannot decode image ({exc})") from exc
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC batch -> float NCHW, scaled to [0,1] then standardised with mean/std."""
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        return cls(
            image_size=int(data["image_size"]), channels=int(data["channels"]),
            mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
        )
