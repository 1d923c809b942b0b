"""Serving check, run in a fresh process: load a registered version through mlflow.pyfunc and
predict a sample of test images. The register step compares the labels with the evaluation's.

Like with like: the pyfunc predicts on the CPU in fp32 (serving.Classifier loads through modelio.load
and never moves the model), while evaluation may have scored on a GPU under bf16 autocast, where a
borderline image can take the other label. `expected_labels` gives the evaluation's labels only when
they were made on the serving device and precision; otherwise the prediction store's entry made that
way, or, failing that, the same model predicting the sampled images on the CPU in fp32."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from headstart.evaluation.predictions import CPU_FP32

SERVING_DEVICE = CPU_FP32  # what the pyfunc predicts on, whatever machine registers the model


def expected_labels(eval_dir: Path, name: str, model_dir: Path, sample: list[int], images: list[Path]) -> list[int]:
    """Class indices the served model must reproduce on `images` (rows `sample` of the test split),
    made on the serving device and precision."""
    import numpy as np

    from headstart.evaluation import predictions

    meta: dict[str, Any] = json.loads((eval_dir / "metrics.json").read_text())
    made_on = meta["models"][name].get("predicted_on", CPU_FP32)  # evaluations before the store ran on CPU
    evaluated = np.load(eval_dir / "predictions.npz")[f"pred_{name}"]
    if made_on == SERVING_DEVICE:
        return [int(evaluated[i]) for i in sample]
    key, store = meta["models"][name].get("prediction_key"), meta.get("prediction_store")
    if key and store:
        stored = predictions.load(store, predictions.PredictionKey(**{**key, "device": SERVING_DEVICE}),
                                  len(evaluated), len(meta["classes"]))
        if stored is not None:
            return [int(stored[i]) for i in sample]
    return reference_labels(model_dir, images)


def reference_labels(model_dir: Path, images: list[Path]) -> list[int]:
    """The evaluation path (modelio.load, preset decode, engine.predict_logits) on these images, on the CPU."""
    import numpy as np
    import torch

    from headstart.models import modelio
    from headstart.training.engine import predict_logits

    model, card = modelio.load(model_dir)
    model.to("cpu")
    if not images:
        return []
    x = torch.from_numpy(np.stack([card.preset.decode(p) for p in images]))
    return predict_logits(model, card.preset, x, tta=card.tta).argmax(1).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--images", type=Path, required=True, help="text file, one image path per line")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the predicted labels")
    args = parser.parse_args(argv)
    import mlflow
    import pandas as pd

    paths = [Path(p) for p in args.images.read_text().splitlines() if p]
    try:
        model = mlflow.pyfunc.load_model(args.model_uri)
        frame = pd.DataFrame({"image": [p.read_bytes() for p in paths]})
        labels = model.predict(frame)["label"].tolist()
    except Exception as exc:  # noqa: BLE001 - any failure to serve is the finding itself
        args.out.write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    args.out.write_text(json.dumps({"ok": True, "labels": labels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
