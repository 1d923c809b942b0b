"""The register step's pure helpers: which test images the serving check uses, what it pins, the tags a
registered version carries, and the check that the evaluation saw the current champion."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.errors import RegistryError
from headstart.evaluation.eval_folder import require_champion
from headstart.registry.lineage import data_only, version_tags
from headstart.registry.logged_model import public_version
from headstart.serving.verify import serving_sample

SORTED_BY_CLASS = np.repeat(np.arange(10), 50)  # how evaluate lists the test split: class folder by folder


def test_serving_sample_covers_every_class_when_n_allows() -> None:
    picked = serving_sample(SORTED_BY_CLASS, 32)
    assert len(picked) == len(set(picked)) == 32
    counts = np.bincount(SORTED_BY_CLASS[picked], minlength=10)
    assert counts.min() >= 3 and counts.max() <= 4  # round-robin: as even as 32 over 10 can be
    assert serving_sample(SORTED_BY_CLASS, 10) == [50 * k for k in range(10)]  # each class's first image


def test_serving_sample_is_deterministic_and_keeps_each_class_in_order() -> None:
    labels = np.random.default_rng(0).integers(0, 4, size=200)
    a, b = serving_sample(labels, 17), serving_sample(labels.copy(), 17)
    assert a == b
    for k in range(4):
        mine = [i for i in a if labels[i] == k]
        assert mine == sorted(mine) and mine == list(np.flatnonzero(labels == k)[: len(mine)])


def test_serving_sample_with_fewer_images_than_classes_or_than_asked() -> None:
    picked = serving_sample(SORTED_BY_CLASS, 3)
    assert len(set(SORTED_BY_CLASS[picked])) == 3  # n < classes: n distinct classes, one image each
    small = np.array([0, 0, 1, 2, 2, 2])
    assert serving_sample(small, 100) == [0, 2, 3, 1, 4, 5]  # everything, round-robin
    assert serving_sample(np.array([], dtype=int), 5) == []


@pytest.mark.parametrize(("installed", "pinned"), [
    ("2.14.1+cpu", "2.14.1"), ("2.14.1+cu124", "2.14.1"), ("0.29.0+rocm6.2", "0.29.0"),
    ("2.14.1", "2.14.1"), ("1.26.4", "1.26.4"), ("3.0.0rc1", "3.0.0rc1"), ("2.0.post1", "2.0.post1"),
])
def test_public_version_strips_local_labels_only(installed: str, pinned: str) -> None:
    assert public_version(installed) == pinned


def test_version_tags_name_the_data_the_code_both_runs_and_every_models_numbers() -> None:
    data = {"data.dvc_md5": "abc.dir", "git.commit": "f00d", "data.source": "git@host:p"}
    models = {"finetune": {"accuracy": 0.91234, "macro_f1": 0.9}, "scratch": {"accuracy": 0.5, "macro_f1": 0.25},
              "champion": {"accuracy": 0.875, "macro_f1": 0.86}}
    tags = version_tags(data, "finetune", {"finetune": "r1", "scratch": None}, True, models, "resnet18", 224)
    assert tags == {**data, "headstart.winner": "finetune", "headstart.finetune_run_id": "r1",
                    "headstart.scratch_run_id": "", "headstart.pretraining_paid": "True",
                    "metric.finetune.accuracy": "0.9123", "metric.finetune.macro_f1": "0.9000",
                    "metric.scratch.accuracy": "0.5000", "metric.scratch.macro_f1": "0.2500",
                    "metric.champion.accuracy": "0.8750", "metric.champion.macro_f1": "0.8600",
                    "params.arch": "resnet18", "params.image_size": "224"}
    assert data_only(data) == {"data.dvc_md5": "abc.dir", "data.source": "git@host:p"}  # the logged dataset's


def test_an_evaluation_of_another_champion_is_refused_naming_both() -> None:
    require_champion("3", "3")
    require_champion(None, None)  # no champion then, none now
    with pytest.raises(RegistryError, match=r"evaluated v3, now v4\); re-run evaluate"):
        require_champion("3", "4")
    with pytest.raises(RegistryError, match=r"evaluated vNone, now v1"):
        require_champion(None, "1")
