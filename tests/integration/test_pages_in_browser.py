"""What a data scientist opens, rendered by a real browser (Debian's chromium, headless): the evaluation
report, the decision record and the validation report of a promoted run and of a refused one. The checks
are on the DOM Chromium built: the per-class rows and the flips table are there, every image decoded, and
no link points to a file or an anchor that does not exist."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from headstart.config import load_params
from headstart.serving import verify
from headstart.steps import evaluate, register, train, validate
from tests.conftest import CLASSES, make_imagefolder
from tests.helpers import browser_dom, params_cfg, serving_check_in_process

pytestmark = pytest.mark.slow  # three loops on tiny data (~90 s): a SQLite MLflow store, the serving check, chromium
ROOT = Path(__file__).resolve().parents[2]
LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)
# the same models again, judged with no margin: an exact tie cannot show the gain no_regression asks for
STRICT = LENIENT.model_copy(update={"max_regression": 0.0})


class Dom(HTMLParser):
    """The elements of a page: (tag, attributes, text inside it up to the next tag)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_data(self, data: str) -> None:
        if self.elements:
            self.elements[-1][2].append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a, _ in self.elements if t == tag and all(
            v in a.get(k.rstrip("_"), "").split() or a.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def text(self) -> str:
        return " ".join(" ".join(chunks) for _, _, chunks in self.elements)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Validation, then three loops on the same tiny data: the first promotion, a promoted run against that
    champion, and a refused one. Returns the folders holding each run's pages."""
    root = tmp_path_factory.mktemp("pages")
    data = make_imagefolder(root / "data")
    validate.run(params_cfg("validate", label_set=None, min_images_per_class=1, cache_dir=None,
                            state_dir=root / "state", workers=1), data, root / "validation")
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                          registered_model="pages-classifier")
    cands = {}
    for role in ("finetune", "scratch"):  # small_cnn: the pages, not the backbone, are under test here
        cfg = train.config_from_params(load_params(ROOT / "params.yaml"), role, backbone="small_cnn", weights="none",
                                       channels=1, image_size=32, epochs=1, images_per_class=None,
                                       val_images_per_class=None, checkpoint_dir=None, probe_epochs=0,
                                       lr_backbone=3e-3, tensor_cache_dir=None)
        cands[role] = Path(train.run(cfg, data, root / role, tracking).model_dir)
    folders = {"validation": root / "validation"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify, "_run_check", serving_check_in_process)  # the pages, not the serving process
        for name, thresholds in (("first", LENIENT), ("promoted", LENIENT), ("refused", STRICT)):
            ev = params_cfg("evaluate", bootstrap_samples=200, tensor_cache_dir=None, prediction_store=None)
            evaluate.run(ev, data, cands, root / f"eval-{name}", tracking)
            register.run(params_cfg("register", serving_check_images=6), thresholds, data, cands,
                         root / f"eval-{name}", root / f"decision-{name}", tracking)
            folders[f"eval-{name}"], folders[name] = root / f"eval-{name}", root / f"decision-{name}"
    return folders


def _rendered(page: Path, tmp_path: Path) -> Dom:
    """The page's DOM as Chromium built it, after checking what every page must satisfy: each image
    decoded, each relative link and each #anchor resolving."""
    dom = Dom(browser_dom(page, tmp_path))
    body = dom.find("body")[0]
    assert json.loads(body["data-broken-images"]) == [], f"{page}: images the browser could not decode"
    ids = {a["id"] for _, a, _ in dom.elements if "id" in a}
    for a in dom.find("a"):
        href = a.get("href", "")
        if href.startswith("#"):
            assert href[1:] in ids, f"{page}: link to a missing anchor {href}"
        elif href and not href.startswith(("http://", "https://", "data:", "mailto:")):
            assert (page.parent / href.split("#")[0]).exists(), f"{page}: link to a missing file {href}"
    return dom


@pytest.mark.parametrize("run", ["promoted", "refused"])
def test_evaluation_report_shows_the_decision_per_class_rows_flips_and_loads_every_image(
        runs: dict[str, Path], run: str, tmp_path: Path) -> None:
    record = json.loads((runs[run] / "decision.json").read_text())
    assert record["decision"] == ("promoted" if run == "promoted" else "rejected")
    dom = _rendered(runs[run] / "report.html", tmp_path)
    assert len(dom.find("tr", class_="class-row")) == len(CLASSES)  # candidate, baseline and champion per class
    assert len(dom.find("tr", class_="flip-row")) == len(CLASSES)  # against champion v1 (v2 for the refused run)
    assert int(dom.find("body")[0]["data-images"]) >= 3  # confusion, calibration, learning curves at least
    text = dom.text()
    assert f"v{record['version']}" in text
    if run == "refused":
        assert dom.find("table", id="failed-checks") and "no_regression" in text
    else:
        assert not dom.find("table", id="failed-checks")


@pytest.mark.parametrize("run", ["promoted", "refused"])
def test_decision_record_names_the_version_the_classes_and_after_a_refusal_the_override(
        runs: dict[str, Path], run: str, tmp_path: Path) -> None:
    record = json.loads((runs[run] / "decision.json").read_text())
    dom = _rendered(runs[run] / "decision.html", tmp_path)
    text = dom.text()
    assert f"v{record['version']}" in text and record["data_version"]["data_md5"] is None  # tmp data: no data.dvc
    cells = {" ".join(chunks).strip() for tag, _, chunks in dom.elements if tag == "td"}
    assert set(CLASSES) <= cells  # the per-class table against the champion
    override = f'headstart promote --version {record["version"]} --reason "..."'
    assert (override in text) == (run == "refused")


def test_validation_and_pending_evaluation_pages_load_every_image_and_link(runs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    validation = _rendered(runs["validation"] / "report.html", tmp_path)
    assert int(validation.find("body")[0]["data-images"]) >= 1  # the class chart and the sample thumbnails
    statuses = {" ".join(chunks).strip() for tag, _, chunks in validation.elements if tag == "td"}
    assert "n/a" in " ".join(statuses)  # shards of an ImageFolder, drift on a first run
    pending = _rendered(runs["eval-first"] / "report.html", tmp_path)
    assert pending.find("section", id="decision") and "Decision pending" in pending.text()
    assert len(pending.find("tr", class_="class-row")) == len(CLASSES)
