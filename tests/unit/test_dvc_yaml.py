"""dvc.yaml's file order is a valid run order: `make run` runs `dvc repro --single-item dvc.yaml`,
which takes the stages in file order instead of sorting them by their dependencies."""

from __future__ import annotations

import ast
import re
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
    assert list(stages) == ["validate", "train_finetune", "train_scratch", "champion", "evaluate", "register"]


def test_only_validate_reads_the_data_folder_through_dvc():
    """The rest depend on validate's summary.json, which fingerprints every file of data/."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [n for n, s in stages.items() if "data" in s.get("deps", [])] == ["validate"]
    for name in ("train_finetune", "train_scratch", "evaluate"):
        assert "outputs/validation/summary.json" in stages[name]["deps"], name


# --- every stage lists the code it runs -------------------------------------------

SRC = ROOT / "src"
CLI = SRC / "headstart" / "cli.py"
# holds a docstring and __version__ only (checked below): no stage's output depends on it
EXEMPT = {SRC / "headstart" / "__init__.py"}


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported(nodes: list[ast.AST], path: Path) -> set[str]:
    """headstart modules imported anywhere in `nodes`, function bodies included, and their packages;
    also a module named by a string (`python -m headstart.x`)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base for a in node.names]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"headstart(\.\w+)+", node.value) and _module_file(node.value) \
                and node.value != "headstart.cli":  # torchrun re-running this same command
            names = [node.value]  # run as a process: [sys.executable, "-m", "headstart.serving.check"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "headstart":
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in found if _module_file(n)}


def _cli_roots(command: str) -> set[str]:
    """What `headstart <command>` imports: its function in cli.py and the cli.py helpers it calls. The
    pipeline sub-commands cli.py mounts at import shape no stage's output, so they are not followed."""
    tree = ast.parse(CLI.read_text(encoding="utf-8"))
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}

    def names(fn: ast.FunctionDef) -> set[str]:
        out = {fn.name.replace("_", "-")}
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and deco.args and isinstance(deco.args[0], ast.Constant):
                out.add(deco.args[0].value)
        return out

    entry = [f for f in funcs.values() if f.decorator_list and command in names(f)]
    assert len(entry) == 1, f"no single cli.py command {command!r}"
    todo, seen = [entry[0]], set()
    while todo:
        fn = todo.pop()
        seen.add(fn.name)
        todo += [funcs[c.func.id] for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                 and c.func.id in funcs and c.func.id not in seen]
    module_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return _imported([funcs[n] for n in seen] + module_level, CLI)


def code_of_stage(cmd: str) -> set[Path]:
    """Every file of src/headstart that `cmd` (a `headstart ...` call) runs, followed transitively."""
    words = cmd.split()
    assert words[0] == "headstart", cmd
    todo, seen = list(_cli_roots(words[1])), set()
    files = {CLI}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        files.add(path)
        todo += _imported([ast.parse(path.read_text(encoding="utf-8"))], path) - seen
    return files - EXEMPT


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_depends_on_all_the_code_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        if stage.get("always_changed"):
            continue  # runs every time: its deps decide nothing
        lacking = sorted(p.relative_to(ROOT).as_posix() for p in code_of_stage(stage["cmd"])
                         if not _covered(p, stage.get("deps", [])))
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml stages miss code they run: {missing}"


def test_the_import_walk_finds_what_it_must():
    """The walk itself: function-local imports (evaluate imports registry inside run), relative and
    `from package import module` forms, and the step module behind each command."""
    evaluate = {p.relative_to(SRC).as_posix() for p in code_of_stage("headstart evaluate")}
    assert {"headstart/steps/evaluate.py", "headstart/evaluation/stats.py", "headstart/registry/model_registry.py",
            "headstart/cli.py", "headstart/data/imagefolder.py"} <= evaluate
    assert "headstart/kfp/spec.py" not in evaluate
    train = {p.relative_to(SRC).as_posix() for p in code_of_stage("headstart train finetune")}
    assert {"headstart/steps/train.py", "headstart/training/distributed.py", "headstart/training/engine.py"} <= train
    register = {p.relative_to(SRC).as_posix() for p in code_of_stage("headstart register --data data")}
    assert "headstart/serving/check.py" in register  # run as `python -m headstart.serving.check`
    init = ast.parse((SRC / "headstart" / "__init__.py").read_text())
    assert all(isinstance(n, ast.Expr | ast.Assign) for n in init.body)  # why EXEMPT may skip it


def test_a_champion_move_reaches_evaluate_and_register():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    champion = stages["champion"]
    assert champion["always_changed"] is True
    assert champion["cmd"].startswith("headstart champion-ref --out outputs/champion.json")
    assert champion["outs"] == [{"outputs/champion.json": {"cache": False, "persist": True}}]
    for name in ("evaluate", "register"):
        assert "outputs/champion.json" in stages[name]["deps"], name
