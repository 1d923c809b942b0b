"""decide() over every combination of passing and failing checks, with and without a champion.

Synthetic evaluations: 5 classes x 600 test images. The candidate is right on all but `w`
images per class (w = 60: accuracy 0.90; w = 180: 0.70); the baseline and champion are built
from the candidate's correctness by flipping chosen images, so each check is driven to pass or
fail decisively and independently of the others.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from pydantic import ValidationError

from headstart.errors import ConfigError, DataError, RegistryError
from headstart.evaluation import gate
from headstart.evaluation.gate import (
    Check,
    GateThresholds,
    IncomparableChampion,
    ModelEval,
    ScheduleState,
    alpha_per_run,
    choose_winner,
    decide,
)
from headstart.evaluation.stats import wilson_interval
from tests.helpers import params_cfg, repo_params

K, PER_CLASS = 5, 600
CLASSES = tuple(f"class{k}" for k in range(K))
Y = np.repeat(np.arange(K), PER_CLASS)


def _eval(name: str, correct: np.ndarray, version: str | None = None) -> ModelEval:
    return ModelEval(name, Y, np.where(correct, Y, (Y + 1) % K), CLASSES, version)


def _candidate_correct(wrong_per_class: int) -> np.ndarray:
    """Wrong on the first `wrong_per_class` images of each class."""
    return np.tile(np.arange(PER_CLASS) >= wrong_per_class, K)


def _flip(correct: np.ndarray, w: int, worse: dict[int, int], better: dict[int, int]) -> np.ndarray:
    """Copy of the candidate's correctness, wrong on `worse[k]` more and right on `better[k]` more images."""
    out = correct.copy()
    for k, m in worse.items():
        out[k * PER_CLASS + w : k * PER_CLASS + w + m] = False
    for k, m in better.items():
        assert m <= w
        out[k * PER_CLASS : k * PER_CLASS + m] = True
    return out


ACCURACY = ("pass", "fail")
MACRO_F1 = ("pass", "fail", "off")
WINNER = ("finetune_pays", "finetune_unproven", "scratch")
CHAMPION = ("none", "nr_pass-cr_pass", "nr_pass-cr_fail", "nr_fail-cr_pass", "nr_fail-cr_fail", "other_classes")
# max_negative_flip_rate: off, or a limit every scenario's NFR (1% to 2.5%) is under / clearly over.
FLIPS = {"off": None, "pass": 0.07, "fail": 0.005}
# The window before this run: fresh, or its last run used (the run opens window 4).
SCHEDULES = {"fresh": ScheduleState(), "used_up": ScheduleState(52, 52, 52 * 0.1 / 104, 3, "window 2 used up")}
OTHER_CLASSES = (*CLASSES[:-1], "retired")  # the champion knew "retired", not class4
CASES = list(itertools.product(ACCURACY, MACRO_F1, WINNER, CHAMPION, FLIPS, SCHEDULES))


def _scenario(
    acc: str, f1: str, winner: str, champ: str, flips: str = "pass"
) -> tuple[ModelEval, ModelEval, ModelEval | IncomparableChampion | None, GateThresholds]:
    w = 60 if acc == "pass" else 180
    cand_ok = _candidate_correct(w)
    if winner == "scratch":
        cand = _eval("scratch", cand_ok)
        base = cand
    else:
        cand = _eval("finetune", cand_ok, version="7")
        if winner == "finetune_pays":  # baseline wrong on 60 more images per class: +10 points
            base_ok = _flip(cand_ok, w, dict.fromkeys(range(K), 60), {})
        else:  # a hair's breadth: +2 images in 3,000, CI straddles 0
            base_ok = _flip(cand_ok, w, {0: 4}, {1: 2})
        base = _eval("scratch", base_ok)
    champion = None
    if champ == "other_classes":
        champion = IncomparableChampion(OTHER_CLASSES, version="3")
    elif champ != "none":
        nr_pass, cr_pass = champ == "nr_pass-cr_pass" or champ == "nr_pass-cr_fail", champ.endswith("cr_pass")
        if nr_pass and cr_pass:  # +10 points in every class, yet 15 images per class broken: NFR 2.5%
            worse, better = dict.fromkeys(range(K), 75), dict.fromkeys(range(K), 15)
        elif nr_pass:  # class0 loses 10 points, the rest gain 10: +6 points overall, class0 vetoed
            worse, better = dict.fromkeys(range(1, K), 60), {0: 60}
        elif cr_pass:  # champion 1 point better in every class: regression, no class beyond 5 points
            worse, better = {}, dict.fromkeys(range(K), 6)
        else:  # class0 loses 10 points, nothing gained
            worse, better = {}, {0: 60}
        champion = _eval("champion", _flip(cand_ok, w, worse, better), version="3")
    th = params_cfg("gate",
                    min_macro_f1={"pass": 0.5, "fail": 0.95, "off": None}[f1], max_negative_flip_rate=FLIPS[flips])
    return cand, base, champion, th


def _expected(acc: str, f1: str, winner: str, champ: str, flips: str = "pass") -> dict[str, tuple[bool, bool]]:
    """check name -> (applies, passed)."""
    has_champ = champ != "none"
    comparable = champ not in ("none", "other_classes")
    return {
        gate.ACCURACY_FLOOR: (True, acc == "pass"),
        gate.MACRO_F1_FLOOR: (f1 != "off", f1 != "fail"),
        gate.BEATS_BASELINE: (winner != "scratch", winner != "finetune_unproven"),
        gate.LABEL_SET: (has_champ, champ != "other_classes"),
        gate.NO_REGRESSION: (comparable, champ.startswith("nr_pass") or not comparable),
        gate.CLASS_RECALL: (comparable, champ.endswith("cr_pass") or not comparable),
        gate.NEGATIVE_FLIPS: (comparable and flips != "off", flips != "fail" or not comparable),
    }


def _numbers(c: Check) -> list[str]:
    """The numbers a reader needs to see in the reason for a failed check."""
    if c.name in (gate.ACCURACY_FLOOR, gate.MACRO_F1_FLOOR):
        return [f"{c.value:.4f}", f"{c.threshold:.4f}"]
    if c.name == gate.CLASS_RECALL:
        return [f"{c.value:+.4f}", f"{c.threshold:.4f}", f"{c.p_value:.3g}", repr(c.subject)]
    if c.name == gate.LABEL_SET:  # no numbers: the classes added and removed, and the way through
        return ["added: class4", "removed: retired", "headstart promote --version"]
    if c.name == gate.NEGATIVE_FLIPS:
        return [f"{c.value:.4f}", f"{c.ci_low:.4f}", f"{c.threshold:.4f}", "images that champion v3 got right"]
    return [
        f"{c.value:+.4f}",
        f"{c.ci_low:+.4f}",
        f"{c.ci_high:+.4f}",
        f"{c.threshold:+.4f}",
        f"{c.p_value:.3g}",
    ]


@pytest.mark.parametrize(("acc", "f1", "winner", "champ", "flips", "sched"), CASES, ids=["-".join(c) for c in CASES])
def test_decide_every_combination(acc: str, f1: str, winner: str, champ: str, flips: str, sched: str) -> None:
    cand, base, champion, th = _scenario(acc, f1, winner, champ, flips)
    before = SCHEDULES[sched]
    d = decide(cand, base, champion, th, before)
    expected = _expected(acc, f1, winner, champ, flips)

    assert [c.name for c in d.checks] == list(gate.CHECK_NAMES)
    for c in d.checks:
        applies, passed = expected[c.name]
        assert (c.applies, c.passed or not c.applies) == (applies, passed or not applies), c
    failed = [c for c in d.checks if c.applies and not c.passed]
    assert d.promote == (not failed) == all(p for a, p in expected.values() if a)
    assert len(d.reasons) == len(failed)
    for c, reason in zip(failed, d.reasons, strict=True):
        assert reason.startswith(c.name)
        for number in _numbers(c):
            assert number in reason, (number, reason)
    summary = d.summary_reason()
    assert len(summary) <= 250
    assert summary.startswith("promoted" if d.promote else "rejected")
    assert all(c.name in summary for c in failed)

    assert d.first_run == (champion is None)
    assert (d.label_change is not None) == (champ == "other_classes")
    assert d.pretraining_paid == {"finetune_pays": True, "finetune_unproven": False, "scratch": False}[winner]
    assert (champion is None) == any("No champion yet" in n for n in d.notes)
    assert (winner == "scratch") == any("Pre-training did not pay" in n for n in d.notes)
    assert d.champion_version == (None if champion is None else "3")

    # Only a run compared against a champion spends budget and counts; the flips exist only then.
    comparable = isinstance(champion, ModelEval)
    flip_check = d.check(gate.NEGATIVE_FLIPS)
    assert d.schedule_before == before
    if comparable:
        assert d.alpha_run == pytest.approx(0.1 / 52 / 2)
        assert d.schedule_after == before.after_run(d.alpha_run, 52)
        assert d.schedule_after.window_runs == 1 and d.schedule_after.window == before.window + (sched == "used_up")
        assert d.flips["negative_flips"] == round(flip_check.value * 3000) > 0
        assert (flip_check.threshold, flip_check.ci_low) == (FLIPS[flips], wilson_interval(
            d.flips["negative_flips"], 3000, 0.90)[0])
    else:
        assert d.alpha_run is None and d.schedule_after == before and d.flips is None
        assert flip_check.value is None and not flip_check.applies

    record = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert record["decision"] == ("promoted" if d.promote else "rejected")
    assert len(record["checks"]) == len(gate.CHECK_NAMES)
    assert record["schedule"]["before"] == before.to_dict()
    assert record["schedule"]["after"] == d.schedule_after.to_dict()
    assert (record["flips"] is None) == (not comparable)
    md = d.to_markdown()
    assert ("PROMOTED" if d.promote else "REJECTED") in md
    for c in d.checks:
        assert f"| {c.name} |" in md
    assert ("### Flips against the champion v3" in md) == comparable
    assert f"run {d.schedule_after.window_runs} of 52 in window {d.schedule_after.window}" in md


def test_first_run_record_says_no_champion_yet() -> None:
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    d = decide(cand, base, None, th)
    assert d.promote and d.first_run and d.champion is None
    for name in (gate.LABEL_SET, gate.NO_REGRESSION, gate.CLASS_RECALL):
        c = d.check(name)
        assert not c.applies and c.detail == "no champion yet" and c.value is None
    assert d.summary_reason() == "promoted: all 2 applicable checks passed (no champion yet)"
    assert d.to_dict()["champion"] is None
    assert "No champion yet" in d.to_markdown() and "| no_regression | n/a |" in d.to_markdown()


def test_disabled_baseline_margin_reports_numbers_but_does_not_judge() -> None:
    cand, base, champion, _ = _scenario("pass", "off", "finetune_unproven", "nr_pass-cr_pass")
    d = decide(cand, base, champion, params_cfg("gate", min_gain_over_baseline=None))
    c = d.check(gate.BEATS_BASELINE)
    assert not c.applies and c.value == pytest.approx(2 / 3000) and c.p_value is not None
    assert d.promote and d.pretraining_paid is None


def test_equal_champion_is_not_promoted_under_defaults() -> None:
    """Default max_regression = 0: no evidence of a gain, no promotion (see gate_simulation)."""
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    d = decide(cand, base, _eval("champion", cand.correct, "3"), th)
    assert not d.promote and d.check(gate.NO_REGRESSION).ci_low == 0.0 and d.check(gate.NO_REGRESSION).p_value == 1
    loose = decide(
        cand, base, _eval("champion", cand.correct, "3"), th.model_copy(update={"max_regression": 0.01})
    )
    assert loose.promote


def test_drops_within_the_margin_are_not_a_veto() -> None:
    """Every class drops 2 to 4.8 points: under the 5-point margin, so no class is vetoed."""
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    champ_ok = _flip(cand.correct, 60, {}, {k: 12 + 4 * k for k in range(K)})
    d = decide(cand, base, _eval("champion", champ_ok, "3"), th)
    c = d.check(gate.CLASS_RECALL)
    assert c.passed and c.subject == "class4" and c.value == pytest.approx(0.0467, abs=1e-4)
    assert c.p_value > th.alpha and "no class vetoed" in c.detail
    assert not d.promote and [r.split()[0] for r in d.reasons] == [gate.NO_REGRESSION]


def test_decide_is_deterministic() -> None:
    args = _scenario("pass", "pass", "finetune_unproven", "nr_fail-cr_fail")
    assert decide(*args).to_dict() == decide(*args).to_dict()


def test_choose_winner_ties_go_to_scratch() -> None:
    good, bad = _candidate_correct(60), _candidate_correct(90)
    assert choose_winner(_eval("finetune", good), _eval("scratch", bad))[0].name == "finetune"
    assert choose_winner(_eval("finetune", bad), _eval("scratch", good))[0].name == "scratch"
    winner, other = choose_winner(_eval("finetune", good), _eval("scratch", good))
    assert (winner.name, other.name) == ("scratch", "finetune")


def test_models_on_different_test_sets_are_refused() -> None:
    cand = _eval("finetune", _candidate_correct(60))
    other = ModelEval("scratch", Y[::-1].copy(), Y[::-1].copy(), CLASSES)
    with pytest.raises(DataError, match="same test images"):
        choose_winner(cand, other)
    renamed = ModelEval("champion", Y, Y, tuple(c.upper() for c in CLASSES))
    with pytest.raises(DataError, match="same test images"):
        decide(cand, cand, renamed, params_cfg("gate"))


def test_model_eval_validates_and_measures() -> None:
    m = _eval("finetune", _candidate_correct(60))
    assert m.accuracy == pytest.approx(0.9) and m.macro_f1 == pytest.approx(0.9) and m.correct.sum() == 2700
    with pytest.raises(DataError, match="class indices"):
        ModelEval("x", np.array([0, 1]), np.array([0, 5]), ("a", "b"))
    with pytest.raises(DataError, match="non-empty"):
        ModelEval("x", np.array([0, 1]), np.array([0]), ("a", "b"))


def test_thresholds_are_params_yaml_s_frozen_and_strict() -> None:
    th = params_cfg("gate")
    assert th.model_dump() == repo_params()["gate"]
    with pytest.raises(ConfigError, match=r"gate.min_acuracy: Extra inputs are not permitted"):
        params_cfg("gate", min_acuracy=0.9)
    with pytest.raises(ConfigError, match=r"gate.ci_level: Input should be less than 1"):
        params_cfg("gate", ci_level=1.5)
    with pytest.raises(ValidationError):
        th.min_accuracy = 0.5  # type: ignore[misc]


def test_a_check_added_later_is_summarised() -> None:
    """register appends the serving check to the decision; the summary must still name it."""
    from dataclasses import replace

    d = decide(*_scenario("pass", "off", "finetune_pays", "none"))
    extra = Check("serving", False, True, detail="pyfunc predictions differ on 3 of 32 images")
    d = replace(d, checks=d.checks + (extra,), promote=False)
    assert d.summary_reason() == "rejected: serving: pyfunc predictions differ on 3 of 32 images"
    assert "| serving | **FAIL** |" in d.to_markdown()
    json.dumps(d.to_dict(), allow_nan=False)


def test_a_champion_on_another_label_set_is_named_and_blocks_promotion() -> None:
    """Everything else passes by a wide margin; the changed label set alone must stop the promotion,
    be named (added and removed classes) in the record, and not be taken for a first run."""
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    d = decide(cand, base, IncomparableChampion(OTHER_CLASSES, version="3"), th)
    assert not d.promote and not d.first_run
    assert (d.champion, d.champion_version) == ("champion", "3")
    c = d.check(gate.LABEL_SET)
    assert c.applies and not c.passed and c.subject == "added: class4; removed: retired"
    assert "champion v3 was trained on 5 classes" in c.detail and "headstart promote --version" in c.detail
    assert [r.split()[0] for r in d.reasons] == [gate.LABEL_SET]
    for name in (gate.NO_REGRESSION, gate.CLASS_RECALL):
        assert not d.check(name).applies and "other classes" in d.check(name).detail
    assert not any("No champion yet" in n for n in d.notes)
    assert any("label set changed" in n and "headstart promote" in n for n in d.notes)
    record = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert record["first_run"] is False and record["champion"] == {"name": "champion", "version": "3"}
    assert record["label_change"] == {"champion": list(OTHER_CLASSES), "candidate": list(CLASSES),
                                      "added": ["class4"], "removed": ["retired"]}
    assert record["summary"].startswith("rejected: label_set changed (added: class4; removed: retired)")
    assert "(no champion yet)" not in record["summary"]
    assert "| label_set | **FAIL** |" in d.to_markdown() and "`champion` v3" in d.to_markdown()


def test_classes_added_only_and_reordered_only_are_label_changes_too() -> None:
    cand, base, _, th = _scenario("pass", "off", "scratch", "none")
    grown = decide(cand, base, IncomparableChampion(CLASSES[:3], version="2"), th)
    assert not grown.promote and grown.label_change["added"] == ["class3", "class4"]
    assert grown.label_change["removed"] == []
    assert grown.check(gate.LABEL_SET).subject == "added: class3, class4; removed: none"
    reordered = decide(cand, base, IncomparableChampion(CLASSES[::-1], version="2"), th)
    assert not reordered.promote
    assert reordered.check(gate.LABEL_SET).subject == "same classes in another order"


def test_same_classes_pass_the_label_check_and_unscored_same_classes_are_refused() -> None:
    cand, base, champion, th = _scenario("pass", "off", "finetune_pays", "nr_pass-cr_pass")
    d = decide(cand, base, champion, th)
    c = d.check(gate.LABEL_SET)
    assert d.promote and c.applies and c.passed and c.detail == "same 5 classes as champion v3"
    assert d.label_change is None and d.to_dict()["label_change"] is None
    with pytest.raises(DataError, match="re-run evaluate"):
        decide(cand, base, IncomparableChampion(CLASSES, version="3"), th)


def test_first_run_spends_no_budget_and_has_no_flips() -> None:
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    before = ScheduleState(5, 52, 5 * alpha_per_run(th), 1)
    d = decide(cand, base, None, th, before)
    assert d.promote and d.alpha_run is None and d.flips is None
    assert d.schedule_before == d.schedule_after == before
    c = d.check(gate.NEGATIVE_FLIPS)
    assert not c.applies and c.detail == "no champion yet"
    assert "nothing compared, no false-promotion budget spent; run 5 of 52 in window 1 so far" in d.to_markdown()
    assert d.to_dict()["schedule"] == {"before": before.to_dict(), "after": before.to_dict(), "alpha_run": None,
                                       "candidates_compared": 2}


def test_changed_class_set_compares_nothing_and_spends_no_budget() -> None:
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    d = decide(cand, base, IncomparableChampion(OTHER_CLASSES, version="3"), th, ScheduleState(7, 52, 0.007, 2))
    assert not d.promote and d.alpha_run is None and d.flips is None
    assert d.schedule_after == ScheduleState(7, 52, 0.007, 2)
    c = d.check(gate.NEGATIVE_FLIPS)
    assert not c.applies and c.detail == "champion v3 was trained on other classes"
    assert "Flips against" not in d.to_markdown()


def test_negative_flip_check_refuses_an_otherwise_better_candidate_and_records_its_numbers() -> None:
    """+10 points overall and in every class, but 15 images per class newly wrong (NFR 2.5%)."""
    cand, base, champion, th = _scenario("pass", "off", "finetune_pays", "nr_pass-cr_pass")
    ok = decide(cand, base, champion, th.model_copy(update={"max_negative_flip_rate": 0.021}))
    strict = decide(cand, base, champion, th.model_copy(update={"max_negative_flip_rate": 0.015}))
    off = decide(cand, base, champion, th.model_copy(update={"max_negative_flip_rate": None}))
    low, high = wilson_interval(75, 3000, 0.90)  # one-sided 95% lower bound: 0.0207
    for d, limit in ((ok, 0.021), (strict, 0.015), (off, None)):
        c = d.check(gate.NEGATIVE_FLIPS)
        assert (c.value, c.threshold, c.ci_low, c.ci_high) == (pytest.approx(0.025), limit, low, high)
        assert "75 of 3000 images that champion v3 got right are now wrong" in c.detail
        assert "375 newly right" in c.detail
    # NFR 0.025 is above 0.021, but not clearly: the evidence (lower bound 0.0207) does not refuse.
    assert ok.promote and ok.check(gate.NEGATIVE_FLIPS).passed
    assert not off.check(gate.NEGATIVE_FLIPS).applies and off.promote
    assert not strict.promote and [r.split()[0] for r in strict.reasons] == [gate.NEGATIVE_FLIPS]
    assert strict.summary_reason() == f"rejected: negative_flips NFR 0.0250 low {low:.4f}>0.0150"
    assert f"| negative_flips | **FAIL** | 0.0250 | 0.0150 | [{low:.4f}, {high:.4f}] |" in strict.to_markdown()
    assert strict.flips == off.flips == ok.flips
    f = strict.flips
    assert (f["negative_flips"], f["positive_flips"], f["n"]) == (75, 375, 3000)
    assert f["nfr"] == pytest.approx(0.025) and f["pfr"] == pytest.approx(0.125)
    assert f["nfi"] == pytest.approx(75 / 300) and f["nfi_ci"] == list(wilson_interval(75, 300, 0.95))
    mask0 = cand.y_true == 0  # class0's recall, each model's share of its images right
    cand_recall0, champ_recall0 = cand.correct[mask0].mean(), champion.correct[mask0].mean()
    assert cand_recall0 - champ_recall0 == pytest.approx((75 - 15) / 600)
    assert f["per_class"][0] == {"class": "class0", "support": 600, "nfr": 15 / 600,
                                 "nfr_ci": list(wilson_interval(15, 600, 0.95)), "pfr": 75 / 600,
                                 "pfr_ci": list(wilson_interval(75, 600, 0.95)), "negative_flips": 15,
                                 "positive_flips": 75, "recall_candidate": pytest.approx(cand_recall0),
                                 "recall_champion": pytest.approx(champ_recall0)}


@pytest.mark.parametrize("k", [30, 60])
def test_flip_table_lists_the_worst_classes_first_and_only_20_above_50_classes(k: int) -> None:
    per = 100
    classes = tuple(f"c{i:02d}" for i in range(k))
    y = np.repeat(np.arange(k), per)
    champ_ok = np.ones(y.size, bool)
    cand_ok = champ_ok.copy()
    for i in range(k):  # class i loses i images: c29 is the worst
        cand_ok[i * per : i * per + i] = False

    def ev(name: str, ok: np.ndarray, v: str) -> ModelEval:
        return ModelEval(name, y, np.where(ok, y, (y + 1) % k), classes, v)

    d = decide(ev("scratch", cand_ok, "9"), ev("scratch", cand_ok, "9"), ev("champion", champ_ok, "8"),
               params_cfg("gate", min_accuracy=0.5))
    md = d.to_markdown()
    rows = [line[2:5] for line in md.splitlines() if re.match(r"\| c\d\d \|", line)]
    shown = k if k <= 50 else 20
    assert rows == [f"c{i:02d}" for i in range(k - 1, k - 1 - shown, -1)]
    assert (f"The 20 worst of {k} classes; the other {k - 20} are in decision.json." in md) == (k > 50)
    assert f"| c{k - 1} | {per} | 1.0000 | {1 - (k - 1) / per:.4f} | {-(k - 1) / per:+.4f} | {k - 1} |" in md
    assert len(d.flips["per_class"]) == k and d.flips["negative_flips"] == sum(range(k))


def _paired_10k(gain_points: float) -> tuple[ModelEval, ModelEval]:
    """10,000 images, 1,300 (13%) on which the two models disagree, the candidate ahead by `gain_points`."""
    n, disagree = 10_000, 1300
    won = int(round((disagree + gain_points / 100 * n) / 2))
    y = np.zeros(n, dtype=int)
    champ_ok = np.ones(n, bool)
    cand_ok = np.ones(n, bool)
    champ_ok[:won] = False  # the candidate fixes these
    cand_ok[won:disagree] = False  # and breaks these
    champ_ok[disagree : disagree + 800] = cand_ok[disagree : disagree + 800] = False  # both wrong
    classes = ("a", "b")
    return (ModelEval("scratch", y, np.where(cand_ok, 0, 1), classes, "2"),
            ModelEval("champion", y, np.where(champ_ok, 0, 1), classes, "1"))


def test_no_regression_at_the_run_level_passes_two_points_but_not_half_a_point() -> None:
    th = params_cfg("gate", min_accuracy=0.5)
    cand, champ = _paired_10k(2.0)
    d = decide(cand, cand, champ, th)
    c = d.check(gate.NO_REGRESSION)
    assert d.alpha_run == pytest.approx(0.1 / 52 / 2) and c.value == pytest.approx(0.02)
    assert c.passed and c.p_value < d.alpha_run and c.ci_low > 0.0
    # Two-point gain, 1,300 discordant: z = 200 / sqrt(1300) = 5.55; the bound sits about 3.1 SE below.
    assert c.ci_low == pytest.approx(0.02 - 3.1 * np.sqrt(0.13 - 0.02**2) / 100, abs=0.001)
    cand, champ = _paired_10k(0.5)
    half = decide(cand, cand, champ, th)
    h = half.check(gate.NO_REGRESSION)
    assert h.value == pytest.approx(0.005) and not h.passed and h.p_value > half.alpha_run and h.ci_low < 0
    assert "(675 won / 625 lost)" in h.detail
    assert "at level 0.00096 (budget 0.1 / 52 runs / 2 candidates)" in h.detail
    # One point (z = 100 / sqrt(1300) = 2.77) is what the schedule gives up: it passes a lone run's test at
    # 0.1 / 1 / 2 = 5%, not the schedule's 0.096% (z > 3.1).
    cand, champ = _paired_10k(1.0)
    lone_run = th.model_copy(update={"horizon_runs": 1})
    assert decide(cand, cand, champ, lone_run).promote and not decide(cand, cand, champ, th).promote


def test_max_regression_loosens_the_one_sided_test() -> None:
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    equal = _eval("champion", cand.correct, "3")
    strict = decide(cand, base, equal, th).check(gate.NO_REGRESSION)
    loose = decide(cand, base, equal, th.model_copy(update={"max_regression": 0.01})).check(gate.NO_REGRESSION)
    assert not strict.passed and strict.p_value == 1.0 and strict.threshold == 0.0
    assert "exact McNemar test" in strict.detail and (strict.ci_low, strict.ci_high) == (0.0, 0.0)
    assert loose.passed and loose.p_value < 1e-6 and loose.threshold == -0.01
    assert "Tango score test" in loose.detail and -0.01 < loose.ci_low < 0.0 < loose.ci_high


def test_alpha_per_run_splits_the_budget_over_runs_and_candidates() -> None:
    th = params_cfg("gate", false_promotion_budget=0.10, horizon_runs=52)
    assert alpha_per_run(th) == pytest.approx(0.10 / 52 / 2) == pytest.approx(0.000961538, rel=1e-6)
    assert alpha_per_run(th, candidates_compared=1) == pytest.approx(0.10 / 52)
    assert alpha_per_run(params_cfg("gate", horizon_runs=4, false_promotion_budget=0.2), 4) == pytest.approx(0.0125)
    with pytest.raises(ValueError, match="at least 1"):
        alpha_per_run(th, 0)
    with pytest.raises(ConfigError, match="gate.horizon_runs"):
        params_cfg("gate", horizon_runs=0)
    with pytest.raises(ConfigError, match="gate.false_promotion_budget"):
        params_cfg("gate", false_promotion_budget=1.0)


def test_candidates_compared_sets_the_level_and_is_recorded() -> None:
    cand, base, champion, th = _scenario("pass", "off", "finetune_pays", "nr_pass-cr_pass")
    d = decide(cand, base, champion, th, candidates_compared=1)
    assert d.alpha_run == pytest.approx(0.1 / 52) and d.schedule_after.alpha_spent == pytest.approx(0.1 / 52)
    assert d.to_dict()["schedule"]["candidates_compared"] == 1
    assert "this run's false-promotion level 0.0019 per candidate (x1 candidates)" in d.to_markdown()


def test_schedule_counts_runs_and_spends_alpha() -> None:
    a = alpha_per_run(params_cfg("gate", false_promotion_budget=0.10, horizon_runs=52))
    s = ScheduleState()
    for _ in range(52):
        s = s.after_run(a, 52)
    assert (s.window_runs, s.window, s.horizon_runs, s.reset_reason) == (52, 1, 52, None)
    assert s.alpha_spent * 2 == pytest.approx(0.10)  # the whole budget, and no more, over the window


def test_schedule_opens_a_new_window_after_horizon_runs() -> None:
    s = ScheduleState(52, 52, 0.05, 1).after_run(0.001, 52)
    assert s == ScheduleState(1, 52, 0.001, 2, "window 1 used up (52 runs)")
    assert ScheduleState(51, 52, 0.04, 1).after_run(0.001, 52).window == 1


def test_schedule_opens_a_new_window_when_the_horizon_changes() -> None:
    s = ScheduleState(10, 52, 0.01, 3).after_run(0.002, 26)
    assert s == ScheduleState(1, 26, 0.002, 4, "horizon changed from 52 to 26 runs")
    # A window with no runs yet simply takes the new horizon.
    assert ScheduleState().after_run(0.002, 26) == ScheduleState(1, 26, 0.002, 1, None)


def test_manual_promotion_resets_the_window_and_records_why() -> None:
    s = ScheduleState(30, 52, 0.03, 2).reset("manual promotion of v7 by ana: hotfix for class3", 52)
    assert s == ScheduleState(0, 52, 0.0, 3, "manual promotion of v7 by ana: hotfix for class3")
    cand, base, champion, th = _scenario("pass", "off", "finetune_pays", "nr_pass-cr_pass")
    d = decide(cand, base, champion, th, s)
    assert d.schedule_after == ScheduleState(1, 52, alpha_per_run(th), 3, s.reset_reason)
    assert "run 1 of 52 in window 3 (opened: manual promotion of v7 by ana: hotfix for class3)" in d.to_markdown()


def test_schedule_state_round_trips_and_a_missing_tag_is_a_fresh_window() -> None:
    s = ScheduleState(7, 52, 7 * 0.1 / 104, 2, 'manual promotion of v3 by bo: "urgent"')
    assert ScheduleState.from_json(s.to_json(), "m") == s
    assert ScheduleState.from_json(None, "m") == ScheduleState.from_json("", "m") == ScheduleState()
    assert json.loads(ScheduleState().to_json()) == {"window_runs": 0, "horizon_runs": 52, "alpha_spent": 0.0,
                                                      "window": 1, "reset_reason": None}


CORRUPT = {
    "not json": ("{window_runs: 1", "not JSON"),
    "a list": ("[1, 52, 0.0, 1, null]", "expected an object"),
    "a key missing": ('{"window_runs": 1, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1}', "keys"),
    "an unknown key": ('{"window_runs": 1, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                       '"reset_reason": null, "x": 1}', "keys"),
    "negative runs": ('{"window_runs": -1, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                      '"reset_reason": null}', "window_runs must be a whole number >= 0"),
    "text for a count": ('{"window_runs": "3", "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                         '"reset_reason": null}', "window_runs must be"),
    "a fraction of a run": ('{"window_runs": 1.5, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                            '"reset_reason": null}', "window_runs must be"),
    "a boolean horizon": ('{"window_runs": 1, "horizon_runs": true, "alpha_spent": 0.0, "window": 1, '
                          '"reset_reason": null}', "horizon_runs must be"),
    "window zero": ('{"window_runs": 1, "horizon_runs": 52, "alpha_spent": 0.0, "window": 0, '
                    '"reset_reason": null}', "window must be"),
    "negative alpha": ('{"window_runs": 1, "horizon_runs": 52, "alpha_spent": -0.1, "window": 1, '
                       '"reset_reason": null}', "alpha_spent must be"),
    "a number for a reason": ('{"window_runs": 1, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                              '"reset_reason": 5}', "reset_reason must be"),
    "more runs than the horizon": ('{"window_runs": 60, "horizon_runs": 52, "alpha_spent": 0.0, "window": 1, '
                                   '"reset_reason": null}', "exceeds horizon_runs"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_a_corrupt_schedule_is_refused_naming_the_model_and_the_way_out(case: str) -> None:
    text, why = CORRUPT[case]
    with pytest.raises(RegistryError) as err:
        ScheduleState.from_json(text, "headstart-classifier")
    msg = str(err.value)
    assert "registered model 'headstart-classifier'" in msg and gate.SCHEDULE_TAG in msg and why in msg
    assert "Nothing was promoted" in msg and "headstart promote --version <N> --reason" in msg
