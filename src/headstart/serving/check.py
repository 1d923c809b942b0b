"""Serving check, run in a fresh process: load a registered version through mlflow.pyfunc and
predict a sample of test images. The register step compares the labels with the evaluation's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
