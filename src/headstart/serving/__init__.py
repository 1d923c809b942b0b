"""The registered model's inference: an MLflow pyfunc over the same preset and network as training."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

MODEL_CODE = Path(__file__).with_name("pyfunc_entry.py")
ARTIFACT_KEY = "model_dir"


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return base64.b64decode(value)
    raise TypeError(f"image column holds {type(value).__name__}; expected PNG/JPEG bytes or base64 text")


class Classifier:
    """Pure-Python core of the pyfunc: load once, predict labels from encoded images, the `image` column of
    a DataFrame (the logged signature makes MLflow hand the pyfunc one, whatever the caller sent)."""

    def __init__(self, model_dir: Path) -> None:
        from headstart.models import modelio

        self.model, self.card = modelio.load(model_dir)

    def predict(self, model_input: Any) -> Any:
        import pandas as pd
        import torch

        from headstart.training.engine import predict_logits

        preset = self.card.preset
        images = [preset.decode(_to_bytes(v)) for v in model_input["image"]]
        x = torch.from_numpy(np.stack(images)) if images else torch.empty(0, dtype=torch.uint8)
        probs = torch.softmax(predict_logits(self.model, preset, x, tta=self.card.tta), dim=1).numpy()
        index = probs.argmax(1)
        return pd.DataFrame({
            "label": [self.card.classes[i] for i in index],
            "class_index": index.astype(np.int64),
            "confidence": probs.max(1).astype(np.float64),
        })
