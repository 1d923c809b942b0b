"""The prediction store: a model's predictions on a test split are computed once and
kept, keyed by the model's saved bytes, the test split's content, the TTA mode and the device kind; the
serving check compares served labels with labels made on the serving device and precision."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.evaluation import predictions, scoring
from headstart.serving import check
from headstart.steps import evaluate, register

from ..conftest import CLASSES, make_imagefolder
from ..helpers import params_cfg, random_model

LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 4}, size=16)
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    cfg = params_cfg("evaluate", bootstrap_samples=50, tensor_cache_dir=None,
                     prediction_store=str(tmp_path / "store"))
    scored: list[int] = []  # images each predict_logits call scored
    real = scoring.predict_logits

    def spy(model, preset, x, *args, **kwargs):
        scored.append(len(x))
        return real(model, preset, x, *args, **kwargs)

    monkeypatch.setattr(scoring, "predict_logits", spy)
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))  # as on a machine without a GPU
    return tmp_path, data, cands, cfg, scored


def _how(out: Path) -> dict[str, str]:
    return {k: m["predictions"] for k, m in json.loads((out / "metrics.json").read_text())["models"].items()}


def test_a_second_evaluate_of_unchanged_models_scores_nothing(setup):
    root, data, cands, cfg, scored = setup
    first = evaluate.run(cfg, data, cands, root / "e1")
    assert scored == [12, 12] and _how(root / "e1") == {"finetune": "scored", "scratch": "scored"}
    scored.clear()
    second = evaluate.run(cfg, data, cands, root / "e2")
    assert scored == []
    assert _how(root / "e2") == {"finetune": "reused from the store", "scratch": "reused from the store"}
    for name in cands:
        assert second.models[name]["accuracy"] == first.models[name]["accuracy"]
        assert second.models[name]["predicted_on"] == "cpu/fp32"
    a, b = np.load(root / "e1" / "predictions.npz"), np.load(root / "e2" / "predictions.npz")
    for k in ("y_true", "paths", "pred_finetune", "pred_scratch", "conf_finetune", "conf_scratch"):
        np.testing.assert_array_equal(a[k], b[k])  # the confidences come back from the store too
    assert re.search(r"<td>scratch</td>(<td>[^<]*</td>)+<td>reused from the store</td>",
                     (root / "e2" / "report.html").read_text())


def test_a_changed_test_image_scores_every_model_again(setup):
    root, data, cands, cfg, scored = setup
    evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    image = sorted((data / "test" / "square").iterdir())[0]
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(image)
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12, 12] and set(_how(root / "e2").values()) == {"scored"}


def test_an_added_test_image_scores_again(setup):
    root, data, cands, cfg, scored = setup
    evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    Image.open(sorted((data / "test" / "circle").iterdir())[0]).save(data / "test" / "circle" / "extra.png")
    result = evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [13, 13] and result.models["finetune"]["n_test"] == 13


def test_a_model_with_other_weights_is_scored_again_the_unchanged_one_is_not(setup):
    root, data, cands, cfg, scored = setup
    evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    random_model(cands["scratch"], 3, "scratch")  # retrained: same folder, other weights
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12]
    assert _how(root / "e2") == {"finetune": "reused from the store", "scratch": "scored"}


def test_another_tta_mode_is_scored_again(setup):
    root, data, cands, cfg, scored = setup
    evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    random_model(cands["finetune"], 1, "finetune", tta="flip")  # same weights, flip TTA
    result = evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12] and result.models["finetune"]["tta"] == "flip"
    assert _how(root / "e2")["finetune"] == "scored"


def test_the_key_separates_device_kind_and_tta():
    key = predictions.PredictionKey(model="m", data="d", tta="none", device=predictions.CPU_FP32)
    digests = {key.digest(), replace(key, device=predictions.CUDA_BF16).digest(), replace(key, tta="flip").digest(),
               replace(key, model="m2").digest(), replace(key, data="d2").digest()}
    assert len(digests) == 5
    assert predictions.device_kind("cuda") == "cuda/bf16" and predictions.device_kind("cpu") == "cpu/fp32"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_an_unreadable_or_wrong_entry_is_ignored_and_rewritten(setup, damage: str):
    root, data, cands, cfg, scored = setup
    first = evaluate.run(cfg, data, cands, root / "e1")
    entries = sorted((root / "store").glob("*.npz"))
    assert len(entries) == 2
    for entry in entries:
        if damage == "garbage":
            entry.write_bytes(b"not an npz")
        elif damage == "truncated":
            entry.write_bytes(entry.read_bytes()[:40])
        else:
            with np.load(entry) as e:
                key = e["key"]
            np.savez(entry, labels=np.zeros(5, dtype=np.int32), key=key)
    scored.clear()
    second = evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12, 12]
    assert second.models["finetune"]["accuracy"] == first.models["finetune"]["accuracy"]
    scored.clear()
    evaluate.run(cfg, data, cands, root / "e3")  # rewritten by the second run
    assert scored == []


def test_a_null_store_scores_every_time_and_writes_nothing(setup):
    root, data, cands, cfg, scored = setup
    cfg = cfg.model_copy(update={"prediction_store": None})
    evaluate.run(cfg, data, cands, root / "e1")
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12, 12, 12, 12] and not (root / "store").exists()


def test_the_champion_is_reused_from_the_store_and_new_candidates_are_scored(setup):
    """The issue's case: a second evaluate with an unchanged champion does not score it again."""
    root, data, cands, cfg, scored = setup
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                          registered_model="store-classifier")
    evaluate.run(cfg, data, cands, root / "e1", tracking)
    reg = register.run(params_cfg("register", serving_check_images=6), LENIENT, data, cands, root / "e1",
                       root / "d1", tracking)
    assert reg.promoted and reg.version == "1"
    scored.clear()
    fresh = {"finetune": random_model(root / "ft2", 11, "finetune"),
             "scratch": random_model(root / "sc2", 12, "scratch")}
    result = evaluate.run(cfg, data, fresh, root / "e2", tracking)
    assert result.champion_version == "1"
    assert scored == [12, 12]  # the two new candidates; the champion (v1's bytes) came from the store
    assert _how(root / "e2")["champion"] == "reused from the store"
    assert re.search(r"<td>champion v1</td>(<td>[^<]*</td>)+<td>reused from the store</td>",
                     (root / "e2" / "report.html").read_text())
    winner = reg.winner
    np.testing.assert_array_equal(np.load(root / "e2" / "predictions.npz")["pred_champion"],
                                  np.load(root / "e1" / "predictions.npz")[f"pred_{winner}"])


# --- the serving check compares like with like --------------------------------------------------------

def _fake_gpu_evaluation(root: Path, data: Path, cands: dict[str, Path], cfg) -> tuple[Path, np.ndarray]:
    """An evaluation as a GPU task writes it: predicted_on cuda/bf16, with labels that differ from the CPU's
    on some images (as bf16 can on borderline ones)."""
    out = root / "e-gpu"
    evaluate.run(cfg, data, cands, out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["models"]["finetune"]["predicted_on"] = predictions.CUDA_BF16
    metrics["models"]["finetune"]["prediction_key"]["device"] = predictions.CUDA_BF16
    (out / "metrics.json").write_text(json.dumps(metrics))
    npz = dict(np.load(out / "predictions.npz"))
    cpu = npz["pred_finetune"].copy()
    npz["pred_finetune"] = (cpu + 1) % len(CLASSES)
    np.savez(out / "predictions.npz", **npz)
    return out, cpu


def test_serving_check_never_compares_with_gpu_predictions_it_takes_the_stores_cpu_entry(setup, monkeypatch):
    root, data, cands, cfg, _ = setup
    out, cpu = _fake_gpu_evaluation(root, data, cands, cfg)  # also left cpu/fp32 entries in the store
    sample = [0, 5, 7, 11]
    paths = [data / np.load(out / "predictions.npz")["paths"][i] for i in sample]

    def not_recomputed(*_):
        raise AssertionError("the store's cpu/fp32 entry should have been used")

    monkeypatch.setattr(check, "reference_labels", not_recomputed)
    assert check.expected_labels(out, "finetune", cands["finetune"], sample, paths) == [int(cpu[i]) for i in sample]


def test_serving_check_recomputes_on_the_cpu_without_a_matching_entry(setup):
    root, data, cands, cfg, _ = setup
    out, cpu = _fake_gpu_evaluation(root, data, cands, cfg)
    for entry in (root / "store").glob("*.npz"):
        entry.unlink()
    sample = [1, 2, 9]
    paths = [data / np.load(out / "predictions.npz")["paths"][i] for i in sample]
    assert check.expected_labels(out, "finetune", cands["finetune"], sample, paths) == [int(cpu[i]) for i in sample]


def test_serving_check_takes_cpu_made_evaluation_labels_as_they_are(setup):
    root, data, cands, cfg, _ = setup
    evaluate.run(cfg, data, cands, root / "e1")
    labels = np.load(root / "e1" / "predictions.npz")["pred_scratch"]
    assert check.expected_labels(root / "e1", "scratch", cands["scratch"], [3, 4], []) == [int(labels[3]),
                                                                                              int(labels[4])]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_evaluate_scores_in_bf16_keeps_that_entry_and_the_serving_check_uses_cpu_labels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 20}, size=16)
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    cfg = params_cfg("evaluate", bootstrap_samples=50, tensor_cache_dir=None,
                     prediction_store=str(tmp_path / "store"))
    on_gpu = evaluate.run(cfg, data, cands, tmp_path / "gpu")
    assert on_gpu.models["finetune"]["predicted_on"] == "cuda/bf16"
    again = evaluate.run(cfg, data, cands, tmp_path / "gpu2")
    assert {m["predictions"] for m in again.models.values()} == {"reused from the store"}
    sample = list(range(0, 60, 3))
    paths = [data / p for p in np.load(tmp_path / "gpu" / "predictions.npz")["paths"][sample]]
    for entry in (tmp_path / "store").glob("*.npz"):
        with np.load(entry) as e:
            assert json.loads(str(e["key"]))["device"] == "cuda/bf16"
    recomputed = check.expected_labels(tmp_path / "gpu", "finetune", cands["finetune"], sample, paths)
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))
    evaluate.run(cfg, data, cands, tmp_path / "cpu")  # scored again: another device kind
    cpu = np.load(tmp_path / "cpu" / "predictions.npz")["pred_finetune"]
    assert recomputed == [int(cpu[i]) for i in sample]
    assert check.expected_labels(tmp_path / "gpu", "finetune", cands["finetune"], sample, paths) == recomputed
    gpu = np.load(tmp_path / "gpu" / "predictions.npz")["pred_finetune"]
    print(f"bf16 vs fp32 label disagreements: {int((gpu != cpu).sum())}/{len(cpu)}")


# --- the store is not trusted blindly: library versions in the key, entries signed ------------------------------

def _entry_of(root: Path, out: Path, name: str) -> Path:
    key = json.loads((out / "metrics.json").read_text())["models"][name]["prediction_key"]
    return Path(predictions.entry_uri(str(root / "store"), predictions.PredictionKey(**key)))


def test_a_planted_entry_with_the_right_key_but_forged_labels_is_not_used_and_is_scored_again(
        setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """Whoever can write the store plants the labels that win: here, the true labels for the fine-tuned model."""
    root, data, cands, cfg, scored = setup
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the pipeline's secret")
    first = evaluate.run(cfg, data, cands, root / "e1")
    entry = _entry_of(root, root / "e1", "finetune")
    with np.load(entry) as stored:
        forged = dict(stored)
    forged["labels"] = np.load(root / "e1" / "predictions.npz")["y_true"].astype(np.int32)
    assert not np.array_equal(forged["labels"], np.load(root / "e1" / "predictions.npz")["pred_finetune"])
    np.savez(entry, **forged)
    scored.clear()
    second = evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12]
    assert _how(root / "e2") == {"finetune": "scored", "scratch": "reused from the store"}
    assert second.models["finetune"]["accuracy"] == first.models["finetune"]["accuracy"] < 1.0
    assert any("fails its integrity check" in r.getMessage() and entry.name in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    scored.clear()
    evaluate.run(cfg, data, cands, root / "e3")  # the forged entry was overwritten with a signed one
    assert scored == []


def test_an_entry_signed_under_another_secret_is_scored_again(setup, monkeypatch: pytest.MonkeyPatch):
    root, data, cands, cfg, scored = setup
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "someone else's")
    evaluate.run(cfg, data, cands, root / "e1")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the pipeline's secret")
    scored.clear()
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12, 12]


def test_an_entry_written_under_another_pillow_version_is_a_miss(setup, monkeypatch: pytest.MonkeyPatch):
    """Same model bytes, same image bytes: an older decoder may give other pixels, so other labels."""
    import PIL

    root, data, cands, cfg, scored = setup
    with monkeypatch.context() as m:
        m.setattr(PIL, "__version__", "9.0.0")
        evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == [12, 12] and set(_how(root / "e2").values()) == {"scored"}


def test_the_key_holds_the_torch_and_headstart_code_versions(monkeypatch: pytest.MonkeyPatch):
    key = predictions.PredictionKey(model="m", data="d", tta="none", device=predictions.CPU_FP32)
    before = key.digest()
    monkeypatch.setattr(torch, "__version__", "1.0.0")
    assert key.digest() != before
    monkeypatch.undo()
    monkeypatch.setattr(predictions, "_code_digest", lambda: "another prediction path")
    assert key.digest() != before


def test_without_the_secret_a_local_store_is_checked_and_used_an_s3_store_is_not_used(
        setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """`make run` on SQLite has no MLflow password: the local store (the user's own disk) still works, and a
    tampered entry there is still caught; a shared s3:// store, where a planted entry could not be told from
    ours, is neither read nor written."""
    root, data, cands, cfg, scored = setup
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    evaluate.run(cfg, data, cands, root / "e1")
    scored.clear()
    evaluate.run(cfg, data, cands, root / "e2")
    assert scored == []
    entry = _entry_of(root, root / "e1", "scratch")
    with np.load(entry) as stored:
        altered = dict(stored)
    altered["labels"] = (altered["labels"] + 1) % len(CLASSES)
    np.savez(entry, **altered)
    evaluate.run(cfg, data, cands, root / "e3")
    assert scored == [12]

    def no_access(*_args, **_kwargs):
        raise AssertionError("an unsigned s3:// store must not be touched")

    for name in ("exists", "read_bytes", "upload"):
        monkeypatch.setattr(predictions.storage, name, no_access)
    key = predictions.PredictionKey(model="m", data="d", tta="none", device=predictions.CPU_FP32)
    assert predictions.load("s3://shared-bucket/predictions", key, 3, 2) is None
    assert predictions.save("s3://shared-bucket/predictions", key, np.array([0, 1, 1]), np.ones(3)) is None
    assert sum("MLFLOW_TRACKING_PASSWORD is not set" in r.getMessage() for r in caplog.records) == 2
