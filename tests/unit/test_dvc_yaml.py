"""dvc.yaml's file order is a valid run order: `make run` runs `dvc repro --single-item dvc.yaml`,
which takes the stages in file order instead of sorting them by their dependencies."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_every_stage_comes_after_the_stages_whose_outputs_it_reads():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    produced: dict[str, str] = {}
    for name, stage in stages.items():
        for out in _outs(stage):
            produced[out] = name
    seen: set[str] = set()
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            producers = {p for out, p in produced.items() if dep == out or dep.startswith(out + "/")}
            assert producers <= seen, f"stage {name} reads {dep} from {producers - seen}, listed after it"
        seen.add(name)
    assert list(stages) == ["validate", "train_finetune", "train_scratch", "evaluate", "register"]


def test_only_validate_reads_the_data_folder_through_dvc():
    """The rest depend on validate's summary.json, which fingerprints every file of data/."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [n for n, s in stages.items() if "data" in s.get("deps", [])] == ["validate"]
    for name in ("train_finetune", "train_scratch", "evaluate"):
        assert "outputs/validation/summary.json" in stages[name]["deps"], name
