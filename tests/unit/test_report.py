"""The evaluation report: one page with the decision, per-class numbers, flips, matrices, example errors,
calibration, learning curves and history, rendered from the evaluation folder alone."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.evaluation import examples, report, stats
from headstart.evaluation.gate import ModelEval, decide
from headstart.evaluation.model_metrics import summarise
from headstart.evaluation.stats import confusion
from tests.helpers import params_cfg

CLASSES = [f"class{k}" for k in range(10)]


def _eval_dir(root: Path, champion: bool = True, n_per_class: int = 40) -> Path:
    """A 10-class evaluation folder as evaluate writes it: class 3 is much worse for finetune than for the
    champion, and every image exists as a file (ImageFolder) so thumbnails can be made."""
    rng = np.random.default_rng(0)
    out, data = root / "eval", root / "data"
    y = np.repeat(np.arange(10), n_per_class)
    names = [f"test/{CLASSES[c]}/{i:04d}.png" for i, c in enumerate(y)]
    for name in names:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(data / name)

    def noisy(p_wrong: np.ndarray) -> np.ndarray:
        wrong = rng.random(y.size) < p_wrong[y]
        return np.where(wrong, (y + 1) % 10, y)

    base = np.full(10, 0.1)
    preds = {"finetune": noisy(np.where(np.arange(10) == 3, 0.9, 0.05)), "scratch": noisy(base)}
    if champion:
        preds["champion"] = noisy(base)
    confs = {m: rng.uniform(0.5, 1.0, y.size).astype(np.float32) for m in preds}
    out.mkdir(parents=True)
    models = {m: summarise(y, p, confs[m], CLASSES) for m, p in preds.items()}
    meta = {"models": models, "classes": CLASSES, "comparison": {}, "champion_version": "1" if champion else None}
    (out / "metrics.json").write_text(json.dumps(meta))
    np.savez(out / "predictions.npz", y_true=y, paths=np.array(names), **{f"pred_{m}": p for m, p in preds.items()},
             **{f"conf_{m}": c for m, c in confs.items()})
    examples.write(data, names, examples.choose(y, preds, confs), out / "examples")
    for m in ("finetune", "scratch"):
        hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 20,
                 "val_accuracy": 0.5 + e / 30 - (e == 3) * 0.05, "lr": 0.01 / e, "seconds": 1.0} for e in (1, 2, 3)]
        (out / f"history_{m}.json").write_text(json.dumps(hist))
    return out


def _decision(out: Path) -> dict:
    """A real decision record: the gate run on the folder's predictions, as register writes it."""
    data = np.load(out / "predictions.npz")
    ev = {m: ModelEval(name=m, y_true=data["y_true"], y_pred=data[f"pred_{m}"], class_names=tuple(CLASSES),
                       version="1" if m == "champion" else None) for m in ("finetune", "scratch", "champion")}
    d = decide(ev["finetune"], ev["scratch"], ev["champion"], params_cfg("gate", min_accuracy=0.0))
    return {**d.to_dict(), "version": "2", "winner": d.candidate, "model_name": "clf", "champion_version": "1",
            "data_version": {"git_commit": "abc123", "data_md5": "d41d8"}}


class _Page(HTMLParser):
    """Elements by id, class-row and flip-row cell texts, and every <img>."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.rows: list[list[str]] = []
        self.flip_rows: list[list[str]] = []
        self.imgs: list[dict[str, str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag == "tr" and a.get("class", "").split() and a["class"].split()[0] in ("class-row", "flip-row"):
            self._row = []
            (self.rows if a["class"].startswith("class-row") else self.flip_rows).append(self._row)
            self._flagged = "flagged" in a["class"]
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


SECTIONS = {"decision", "per-class", "flips", "confusion", "examples", "calibration", "curves", "history"}


def test_the_page_explains_a_refusal_with_per_class_rows_the_flagged_class_flips_and_thumbnails(tmp_path):
    out = _eval_dir(tmp_path)
    decision = _decision(out)
    assert decision["decision"] == "rejected"  # class 3 collapsed: the gate's class_recall check vetoes it
    (out / "decision.md").write_text("# record\n")
    history = [{"version": "1", "created": 1, "accuracy": 0.9, "macro_f1": 0.89, "champion": True},
               {"version": "2", "created": 2, "accuracy": 0.85, "macro_f1": 0.84, "champion": False}]
    text = report.render(out, decision, history, {"decision record": "decision.md", "missing": "nope.md",
                                                   "MLflow version": "http://mlflow/#/models/clf/versions/2"})
    page = _Page(text)
    assert page.ids >= SECTIONS
    assert "Refused: clf v2" in text and "abc123" in text and "class_recall" in text
    assert 'href="decision.md"' in text and "http://mlflow/" in text and "nope.md" not in text
    assert len(page.rows) == 10 and len(page.flip_rows) == 10
    # worst first: class3's recall fell from ~0.9 to ~0.1; it leads the table and is flagged
    assert page.rows[0][0].startswith("class3") and "⚑" in page.rows[0][0]
    assert sum("⚑" in r[0] for r in page.rows) == 1
    assert 'class="class-row flagged"' in text
    # its flips: the decision's per-class numbers
    flips3 = next(r for r in decision["flips"]["per_class"] if r["class"] == "class3")
    assert page.flip_rows[0][:3] == ["class3", str(flips3["support"]), str(flips3["negative_flips"])]
    thumbs = [i for i in page.imgs if i["src"].startswith("data:image/jpeg;base64,")]
    assert len(thumbs) == len(list((out / "examples").glob("*.jpg"))) > 0
    for img in thumbs:
        assert base64.b64decode(img["src"].split(",", 1)[1])[:3] == b"\xff\xd8\xff"  # a JPEG
    assert all(i.get("alt") for i in page.imgs)
    assert "No registry history yet" not in text and "v2" in text


def test_before_the_decision_the_page_says_it_is_pending_and_without_a_champion_says_so(tmp_path):
    out = _eval_dir(tmp_path, champion=False)
    text = report.render(out)
    page = _Page(text)
    assert page.ids >= SECTIONS
    assert "Decision pending" in text and "outputs/decision/report.html" in text
    assert "No champion yet" in text and "No registry history yet" in text
    assert len(page.rows) == 10  # finetune against the baseline, scratch
    assert "src=\"http" not in text and "<link" not in text  # self-contained


def test_ece_is_the_image_weighted_gap_between_confidence_and_accuracy():
    # bin (0.6, 0.667]: 2 images at 0.65, 1 right -> |0.5 - 0.65|; bin (0.933, 1]: 2 images at 1.0, both right
    conf = np.array([0.65, 0.65, 1.0, 1.0])
    correct = np.array([True, False, True, True])
    assert stats.expected_calibration_error(conf, correct) == pytest.approx(2 / 4 * 0.15)


def test_the_page_shows_each_models_ece(tmp_path):
    out = _eval_dir(tmp_path)
    text = report.render(out)
    meta = json.loads((out / "metrics.json").read_text())
    eces = re.findall(r"<td class='ece'>([0-9.]+)</td>", text)
    assert eces == [f"{meta['models'][m]['ece']:.4f}" for m in ("finetune", "scratch", "champion")]


def test_per_class_precision_recall_f1_support_match_the_confusion_matrix():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    m = confusion(y, p, 3)
    got = stats.per_class_prf(y, p, 3)
    np.testing.assert_allclose(got["precision"], np.diag(m) / m.sum(axis=0))
    np.testing.assert_allclose(got["recall"], np.diag(m) / m.sum(axis=1))
    np.testing.assert_allclose(got["f1"], [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(got["support"], [3, 2, 1])


def test_example_errors_are_the_most_confident_mistakes_and_the_negative_flips_each_once_and_capped():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(1000), 20)
    preds = {m: np.where(rng.random(y.size) < 0.3, rng.integers(0, 1000, y.size), y)
             for m in ("finetune", "scratch", "champion")}
    confs = {m: rng.random(y.size).astype(np.float32) for m in preds}
    chosen = examples.choose(y, preds, confs)
    rows = [r for group in chosen.values() for r in group]
    assert len(rows) == len(set(rows)) <= examples.CAP  # each image once
    assert sum(map(len, examples.choose(y, preds, confs, cap=30).values())) == 30
    for m in ("finetune", "scratch"):
        flips = np.array(chosen[f"flips/{m}"])
        assert len(flips) == examples.PER_GROUP
        assert (preds["champion"][flips] == y[flips]).all() and (preds[m][flips] != y[flips]).all()
    confident = np.array(chosen["confident/finetune"])
    wrong = preds["finetune"] != y
    assert (preds["finetune"][confident] != y[confident]).all()
    assert confs["finetune"][confident].min() >= np.sort(confs["finetune"][wrong])[-examples.PER_GROUP]


def test_at_1000_classes_the_page_lists_the_50_worst_classes(tmp_path):
    rng = np.random.default_rng(2)
    classes = [f"c{k}" for k in range(1000)]
    y = np.repeat(np.arange(1000), 5)
    preds = {m: np.where(rng.random(y.size) < 0.3, (y + 1) % 1000, y) for m in ("finetune", "scratch", "champion")}
    confs = {m: rng.uniform(0.3, 1, y.size).astype(np.float32) for m in preds}
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"models": {m: summarise(y, p, confs[m], classes)
                                                             for m, p in preds.items()},
                                                  "classes": classes, "champion_version": "1"}))
    np.savez(out / "predictions.npz", y_true=y, **{f"pred_{m}": p for m, p in preds.items()},
             **{f"conf_{m}": c for m, c in confs.items()})
    text = report.render(out)
    page = _Page(text)
    assert len(page.rows) == report.TOP_K and len(page.flip_rows) == report.TOP_K
    assert "worst Δ recall of 1000" in text and "<table class='matrix'>" not in text
    assert len(text) < 500_000


def test_version_history_reads_each_complete_version_with_its_winners_metrics(tmp_path):
    from mlflow import MlflowClient

    from headstart.registry import model_registry as registry

    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                          registered_model="clf")
    c = registry.client(tracking)
    assert isinstance(c, MlflowClient)
    c.create_registered_model("clf")
    tags = [{"headstart.winner": "finetune", "metric.finetune.accuracy": "0.9000",
             "metric.finetune.macro_f1": "0.8900", "metric.scratch.accuracy": "0.5",
             registry.REGISTRATION_TAG: registry.COMPLETE},
            {"headstart.winner": "scratch", "metric.scratch.accuracy": "0.9100", "metric.scratch.macro_f1": "0.9050",
             registry.REGISTRATION_TAG: registry.COMPLETE},
            {"headstart.winner": "scratch", registry.REGISTRATION_TAG: registry.PENDING}]
    for t in tags:
        c.create_model_version("clf", source=str(tmp_path / "m"), tags=t)
    c.set_registered_model_alias("clf", "champion", "1")
    rows = report.version_history(tracking)
    assert [(r["version"], r["accuracy"], r["macro_f1"], r["champion"]) for r in rows] == [
        ("1", 0.9, 0.89, True), ("2", 0.91, 0.905, False)]
    assert all(isinstance(r["created"], int) and r["created"] > 0 for r in rows)
    # the version a run is recording is pending until register completes it: its own page shows it
    assert [r["version"] for r in report.version_history(tracking, current="3")] == ["1", "2", "3"]
