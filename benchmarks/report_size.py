"""How big the evaluation report and the KFP confusion artifacts get, at 10 and at 1,000 classes.

Builds a synthetic evaluation folder as evaluate writes it (finetune, scratch and a champion; confidences;
example thumbnails from real image files; training histories; the confusion PNGs), a decision record from
the real gate, and 20 registry versions of history, then renders the page (headstart.evaluation.report) and measures
it. For the ClassificationMetrics artifact it measures the metadata as sent to the metadata store (a
protobuf Struct) with every class, as before, and with the most-confused cap (kfp_io.log_confusion).

    python benchmarks/report_size.py          # ~1 min on 2 cores
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULT = Path(__file__).parent / "results" / "report_size.json"
ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, n_classes: int, per_class: int, seed: int = 0) -> Path:
    from headstart.evaluation import examples, plots
    from headstart.evaluation.model_metrics import summarise
    from headstart.evaluation.stats import confusion

    rng = np.random.default_rng(seed)
    out, data = root / "eval", root / "data"
    out.mkdir(parents=True)
    classes = [f"n{k:08d}_class_{k}" for k in range(n_classes)]
    y = np.repeat(np.arange(n_classes), per_class)
    names = [f"test/{classes[c]}/{i:06d}.png" for i, c in enumerate(y)]
    preds, confs = {}, {}
    for m, err in (("finetune", 0.12), ("scratch", 0.2), ("champion", 0.13)):
        wrong = rng.random(y.size) < err
        neighbour = (y + rng.integers(1, 4, y.size)) % n_classes  # errors cluster on nearby classes
        preds[m] = np.where(wrong, neighbour, y)
        confs[m] = np.clip(rng.beta(8, 2, y.size) - 0.1 * wrong, 1 / n_classes, 1).astype(np.float32)
    chosen = examples.choose(y, preds, confs)
    for r in {r for rows in chosen.values() for r in rows}:  # only the images the report shows exist
        (data / names[r]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(data / names[r])
    examples.write(data, names, chosen, out / "examples")
    for m, p in preds.items():
        plots.confusion_matrix_png(confusion(y, p, n_classes), classes, out / f"confusion_{m}.png", m)
    models = {m: summarise(y, p, confs[m], classes) for m, p in preds.items()}
    (out / "metrics.json").write_text(json.dumps({"models": models, "classes": classes, "comparison": {},
                                                  "champion_version": "19"}))
    np.savez_compressed(out / "predictions.npz", y_true=y, paths=np.array(names),
                        **{f"pred_{m}": p for m, p in preds.items()}, **{f"conf_{m}": c for m, c in confs.items()})
    for m in ("finetune", "scratch"):
        hist = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_accuracy": 1 - 0.5 / e,
                 "val_accuracy": 1 - 0.55 / e, "lr": 0.01 * 0.7**e, "seconds": 1.0} for e in range(1, 11)]
        (out / f"history_{m}.json").write_text(json.dumps(hist))
    return out


def decision(out: Path) -> dict:
    from headstart.config import load_params
    from headstart.evaluation.gate import ModelEval, decide, thresholds_from_params

    data = np.load(out / "predictions.npz")
    classes = tuple(json.loads((out / "metrics.json").read_text())["classes"])
    ev = {m: ModelEval(name=m, y_true=data["y_true"], y_pred=data[f"pred_{m}"], class_names=classes,
                       version="19" if m == "champion" else None) for m in ("finetune", "scratch", "champion")}
    th = thresholds_from_params(load_params(ROOT / "params.yaml"), bootstrap_samples=200)
    d = decide(ev["finetune"], ev["scratch"], ev["champion"], th)
    return {**d.to_dict(), "version": "20", "winner": d.candidate, "model_name": "headstart-classifier",
            "champion_version": "19", "data_version": {"git_commit": "0" * 40, "data_md5": "f" * 32}}


def struct_bytes(metadata: dict) -> int:
    """The artifact's metadata as the launcher sends it to ML Metadata: a protobuf Struct."""
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(metadata)
    return s.ByteSize()


def kfp_sizes(out: Path) -> dict[str, int]:
    from kfp.dsl import ClassificationMetrics

    from headstart.evaluation.stats import confusion
    from headstart.kfp import kfp_io

    data = np.load(out / "predictions.npz")
    classes = json.loads((out / "metrics.json").read_text())["classes"]
    whole = ClassificationMetrics(name="before")
    whole.log_confusion_matrix(classes, confusion(data["y_true"], data["pred_finetune"], len(classes)).tolist())
    capped = ClassificationMetrics(name="after")
    kfp_io.log_confusion(capped, out, "finetune")
    return {"every_class_struct_bytes": struct_bytes(whole.metadata),
            "every_class_json_bytes": len(json.dumps(whole.metadata)),
            "capped_struct_bytes": struct_bytes(capped.metadata), "capped_json_bytes": len(json.dumps(capped.metadata)),
            "capped_classes": len(capped.metadata["confusionMatrix"]["annotationSpecs"])}


def measure(n_classes: int, per_class: int) -> dict:
    from headstart.evaluation import report

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = build(Path(tmp), n_classes, per_class)
        built = time.perf_counter() - started
        rec = decision(out)
        history = [{"version": str(v), "created": v, "accuracy": 0.85 + v / 400, "macro_f1": 0.84 + v / 400,
                    "champion": v == 19} for v in range(1, 21)]
        started = time.perf_counter()
        page = report.render(out, rec, history, {"decision record": "https://example.org/decision.md"})
        seconds = time.perf_counter() - started
        result = {"classes": n_classes, "test_images": n_classes * per_class, "page_bytes": len(page.encode()),
                  "class_rows": page.count('class="class-row'), "thumbnails": page.count("data:image/jpeg"),
                  "render_seconds": round(seconds, 2), "build_seconds": round(built, 2)}
        return {**result, "kfp_confusion": kfp_sizes(out)}


def main() -> None:
    results = [measure(10, 1000), measure(1000, 100)]
    for r in results:
        print(json.dumps(r))
    RESULT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
