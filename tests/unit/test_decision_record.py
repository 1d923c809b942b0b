"""decision.md and decision.json as a person reads them: the version, the data version, the MLflow references,
each class against the champion, and after a rejection what to do next, from real gate decisions."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from headstart.evaluation.gate import Check, GateThresholds, ModelEval, decide
from headstart.registry import decision_record as dr
from tests.helpers import params_cfg

CLASSES = ("cat", "dog", "owl")
DATA = {"git.commit": "abc1234", "data.dvc_md5": "0123abcd.dir"}


def _decision(th: GateThresholds, champion: bool = True, serving_failure: str | None = None):
    """300 images: the candidate breaks 30 cats the champion got right and fixes 15 owls."""
    y = np.repeat(np.arange(3), 100)
    champ, cand = y.copy(), y.copy()
    cand[:30] = 1
    champ[200:215] = 0
    d = decide(ModelEval("finetune", y, cand, CLASSES), ModelEval("scratch", y, y * 0, CLASSES),
               ModelEval("champion", y, champ, CLASSES, version="6") if champion else None, th)
    if serving_failure:  # as headstart.serving.verify adds it
        d = replace(d, checks=d.checks + (Check("serving_check", False, True, detail=serving_failure),),
                    promote=False, reasons=d.reasons + (serving_failure,))
    d = replace(d, candidate_version="7")
    refs = dr.mlflow_refs("sqlite:////tmp/x/mlflow.db", "1", "r123", "clf", "7")
    record = dr.complete({**d.to_dict(), "model_name": "clf", "version": "7", "winner": "finetune",
                          "champion_version": "6" if champion else None}, "7", DATA, refs)
    return d, record


def test_the_record_names_the_version_the_data_version_and_where_it_is_in_mlflow():
    d, record = _decision(params_cfg("gate", min_accuracy=0.0, max_negative_flip_rate=None, max_regression=1.0,
                                     max_class_recall_drop=0.99))
    assert record["candidate"]["version"] == "7" and record["decision"] == "promoted"
    assert record["data_version"] == {"git_commit": "abc1234", "data_md5": "0123abcd.dir"}
    assert record["mlflow"]["run_id"] == "r123" and record["links"]["decision_record"] == "runs:/r123/decision"
    md = dr.to_markdown(d, record)
    assert md.startswith("# `clf` v7: promoted")
    assert "git commit `abc1234`, data.dvc md5 `0123abcd.dir`" in md
    assert "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db --port 5000" in md
    assert "http://127.0.0.1:5000/#/models/clf/versions/7" in md and "Candidate `finetune` v7" in md
    assert "What to do next" not in md  # nothing to do after a promotion


def test_a_tracking_server_gets_links_and_never_its_credentials():
    refs = dr.mlflow_refs("https://ana:s3cret@mlflow.example.org:8443/", "4", "r9", "my clf", "12")
    assert refs["tracking_uri"] == "https://mlflow.example.org:8443/"
    assert refs["version_url"] == "https://mlflow.example.org:8443/#/models/my%20clf/versions/12"
    assert refs["run_url"] == "https://mlflow.example.org:8443/#/experiments/4/runs/r9"
    assert "s3cret" not in repr(refs) and "ui_command" not in refs


def test_each_class_is_compared_with_the_champion_worst_first():
    d, record = _decision(params_cfg("gate", min_accuracy=0.0))
    md = dr.to_markdown(d, record)
    rows = [line for line in md.splitlines() if re.match(r"\| (cat|dog|owl) \|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["cat", "dog", "owl"]
    assert rows[0].startswith("| cat | 100 | 1.0000 | 0.7000 | -0.3000 | 30 |")
    assert rows[2].startswith("| owl | 100 | 0.8500 | 1.0000 | +0.1500 | 0 |")


def test_a_refusal_says_what_to_do_for_each_failed_check_and_the_exact_override():
    # accuracy 0.90 < 0.95, the gain over the champion (+0.05) unproven at its alpha_run, NFR 0.10 > 0.05,
    # and the registered model failed to serve
    d, record = _decision(params_cfg("gate",
                                     min_accuracy=0.95, max_negative_flip_rate=0.05, max_class_recall_drop=0.99),
                          serving_failure="serving check: the model does not load through mlflow.pyfunc: boom")
    failed = {c["name"] for c in record["checks"] if c["applies"] and not c["passed"]}
    assert failed == {"accuracy_floor", "no_regression", "negative_flips", "serving_check"}
    md = dr.to_markdown(d, record)
    nxt = md.split("### What to do next", 1)[1]
    assert "below `gate.min_accuracy` 0.9500 (params.yaml)" in nxt and "`train.shared.epochs`" in nxt
    alpha = record["schedule"]["alpha_run"]
    assert f"not proven at this run's level alpha_run {alpha:.2g}" in nxt and "`gate.horizon_runs` 52" in nxt
    assert "`gate.max_negative_flip_rate` 0.0500" in nxt and "congruent" in nxt
    assert "fix its packaging" in nxt and "`register.serving_check_timeout_s`" in nxt
    assert nxt.rstrip().endswith('`headstart promote --version 7 --reason "..."`')


@pytest.mark.parametrize("promoted", [True, False])
def test_the_kfp_metrics_carry_the_verdict_and_the_version(promoted: bool):
    th = params_cfg("gate", min_accuracy=0.0 if promoted else 0.99)
    _, record = _decision(th, champion=False)
    numbers = dr.decision_numbers(record)
    assert numbers["gate_passed"] == (1.0 if promoted else 0.0) and numbers["version"] == 7.0
    assert numbers["test_accuracy"] == pytest.approx(0.9)


def test_the_version_description_says_what_it_is_and_the_verdict():
    _, record = _decision(params_cfg("gate", min_accuracy=0.95))
    models = {"finetune": {"accuracy": 0.9, "macro_f1": 0.89}, "champion": {"accuracy": 0.9167, "macro_f1": 0.91}}
    text = dr.version_description(record, models)
    assert text.startswith("v7: finetune, test accuracy 0.9000, macro-F1 0.8900 (champion v6 0.9167); refused: "
                           "accuracy_floor 0.9000<0.9500")
