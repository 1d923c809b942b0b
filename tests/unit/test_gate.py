"""decide() over every combination of passing and failing checks, with and without a champion.

Synthetic evaluations: 5 classes x 600 test images. The candidate is right on all but `w`
images per class (w = 60: accuracy 0.90; w = 180: 0.70); the baseline and champion are built
from the candidate's correctness by flipping chosen images, so each check is driven to pass or
fail decisively and independently of the others.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from pydantic import ValidationError

from headstart import gate
from headstart.errors import DataError
from headstart.gate import Check, GateThresholds, IncomparableChampion, ModelEval, choose_winner, decide

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
OTHER_CLASSES = (*CLASSES[:-1], "retired")  # the champion knew "retired", not class4
CASES = list(itertools.product(ACCURACY, MACRO_F1, WINNER, CHAMPION))


def _scenario(
    acc: str, f1: str, winner: str, champ: str
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
        if nr_pass and cr_pass:  # champion worse everywhere: +10 points
            worse, better = dict.fromkeys(range(K), 60), {}
        elif nr_pass:  # class0 loses 10 points, the rest gain 10: +6 points overall, class0 vetoed
            worse, better = dict.fromkeys(range(1, K), 60), {0: 60}
        elif cr_pass:  # champion 1 point better in every class: regression, no class beyond 5 points
            worse, better = {}, dict.fromkeys(range(K), 6)
        else:  # class0 loses 10 points, nothing gained
            worse, better = {}, {0: 60}
        champion = _eval("champion", _flip(cand_ok, w, worse, better), version="3")
    th = GateThresholds(min_macro_f1={"pass": 0.5, "fail": 0.95, "off": None}[f1])
    return cand, base, champion, th


def _expected(acc: str, f1: str, winner: str, champ: str) -> dict[str, tuple[bool, bool]]:
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
        gate.NEGATIVE_FLIPS: (comparable, True),
    }


def _numbers(c: Check) -> list[str]:
    """The numbers a reader needs to see in the reason for a failed check."""
    if c.name in (gate.ACCURACY_FLOOR, gate.MACRO_F1_FLOOR):
        return [f"{c.value:.4f}", f"{c.threshold:.4f}"]
    if c.name == gate.CLASS_RECALL:
        return [f"{c.value:+.4f}", f"{c.threshold:.4f}", f"{c.p_value:.3g}", repr(c.subject)]
    if c.name == gate.LABEL_SET:  # no numbers: the classes added and removed, and the way through
        return ["added: class4", "removed: retired", "headstart promote --version"]
    return [
        f"{c.value:+.4f}",
        f"{c.ci_low:+.4f}",
        f"{c.ci_high:+.4f}",
        f"{c.threshold:+.4f}",
        f"{c.p_value:.3g}",
    ]


@pytest.mark.parametrize(("acc", "f1", "winner", "champ"), CASES, ids=["-".join(c) for c in CASES])
def test_decide_every_combination(acc: str, f1: str, winner: str, champ: str) -> None:
    cand, base, champion, th = _scenario(acc, f1, winner, champ)
    d = decide(cand, base, champion, th)
    expected = _expected(acc, f1, winner, champ)

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

    record = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert record["decision"] == ("promoted" if d.promote else "rejected")
    assert len(record["checks"]) == len(gate.CHECK_NAMES)
    md = d.to_markdown()
    assert ("PROMOTED" if d.promote else "REJECTED") in md
    for c in d.checks:
        assert f"| {c.name} |" in md


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
    d = decide(cand, base, champion, GateThresholds(min_gain_over_baseline=None))
    c = d.check(gate.BEATS_BASELINE)
    assert not c.applies and c.value == pytest.approx(2 / 3000) and c.p_value is not None
    assert d.promote and d.pretraining_paid is None


def test_equal_champion_is_not_promoted_under_defaults() -> None:
    """Default max_regression = 0: no evidence of a gain, no promotion (see gate_simulation)."""
    cand, base, _, th = _scenario("pass", "off", "finetune_pays", "none")
    d = decide(cand, base, _eval("champion", cand.correct, "3"), th)
    assert not d.promote and d.check(gate.NO_REGRESSION).ci_low < 0.0 < d.check(gate.NO_REGRESSION).ci_high
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
        decide(cand, cand, renamed, GateThresholds())


def test_model_eval_validates_and_measures() -> None:
    m = _eval("finetune", _candidate_correct(60))
    assert m.accuracy == pytest.approx(0.9) and m.macro_f1 == pytest.approx(0.9) and m.correct.sum() == 2700
    with pytest.raises(DataError, match="class indices"):
        ModelEval("x", np.array([0, 1]), np.array([0, 5]), ("a", "b"))
    with pytest.raises(DataError, match="non-empty"):
        ModelEval("x", np.array([0, 1]), np.array([0]), ("a", "b"))


def test_thresholds_are_frozen_and_strict() -> None:
    th = GateThresholds()
    assert (th.min_accuracy, th.min_macro_f1, th.min_gain_over_baseline) == (0.80, None, 0.0)
    assert (th.max_regression, th.max_class_recall_drop, th.ci_level, th.alpha) == (0.0, 0.05, 0.95, 0.05)
    with pytest.raises(ValidationError):
        GateThresholds(min_acuracy=0.9)
    with pytest.raises(ValidationError):
        GateThresholds(ci_level=1.5)
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


def test_item6_a_champion_on_another_label_set_is_named_and_blocks_promotion() -> None:
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


def test_item6_classes_added_only_and_reordered_only_are_label_changes_too() -> None:
    cand, base, _, th = _scenario("pass", "off", "scratch", "none")
    grown = decide(cand, base, IncomparableChampion(CLASSES[:3], version="2"), th)
    assert not grown.promote and grown.label_change["added"] == ["class3", "class4"]
    assert grown.label_change["removed"] == []
    assert grown.check(gate.LABEL_SET).subject == "added: class3, class4; removed: none"
    reordered = decide(cand, base, IncomparableChampion(CLASSES[::-1], version="2"), th)
    assert not reordered.promote
    assert reordered.check(gate.LABEL_SET).subject == "same classes in another order"


def test_item6_same_classes_pass_the_label_check_and_unscored_same_classes_are_refused() -> None:
    cand, base, champion, th = _scenario("pass", "off", "finetune_pays", "nr_pass-cr_pass")
    d = decide(cand, base, champion, th)
    c = d.check(gate.LABEL_SET)
    assert d.promote and c.applies and c.passed and c.detail == "same 5 classes as champion v3"
    assert d.label_change is None and d.to_dict()["label_change"] is None
    with pytest.raises(DataError, match="re-run evaluate"):
        decide(cand, base, IncomparableChampion(CLASSES, version="3"), th)
