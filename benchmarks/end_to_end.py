"""End to end: wall time of `dvc repro` by stage, then of a second `dvc repro` with nothing changed.

Streams dvc's output and timestamps each "Running stage '<name>'" line, so a stage's time runs from its
line to the next stage's line (or the end). Targets (issue 8): non-training share of the wall time
<= 15%, and the no-op re-run <= 3 s of DVC's own work. It runs what `make run` runs,
`dvc repro --single-item dvc.yaml` (the stages of dvc.yaml in file order, without re-checking data.dvc,
which `make data` has just checked), and times a plain no-op `dvc repro` too for comparison. Run it in
the repository root, on a machine that is otherwise idle; it (re)writes outputs/ and the MLflow store
exactly as `make run` does.

    python benchmarks/end_to_end.py              # dvc repro (whatever is stale), then a no-op dvc repro
    python benchmarks/end_to_end.py --force      # dvc repro -f: every stage runs
    python benchmarks/end_to_end.py --import     # time `make data` (the Fashion-MNIST import) first
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULT = Path(__file__).parent / "results" / "end_to_end.json"
STAGE = re.compile(r"Running stage '([^']+)'")
TRAINING = ("train_finetune", "train_scratch")
REPRO = ["dvc", "repro", "--single-item", "dvc.yaml"]  # as in the Makefile's `run`


def timed_repro(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd`, echo its output, and split its wall time by the stage lines it prints."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            if m := STAGE.search(line):
                marks.append((m.group(1), time.perf_counter() - start))
        rc = proc.wait()
    total = time.perf_counter() - start
    stages: dict[str, float] = {}
    for (name, t0), (_, t1) in zip(marks, [*marks[1:], ("end", total)][: len(marks)], strict=True):
        stages[name] = round(t1 - t0, 2)
    startup = marks[0][1] if marks else total
    return {
        "command": " ".join(cmd),
        "rc": rc,
        "wall_s": round(total, 2),
        "before_first_stage_s": round(startup, 2),
        "stages_s": stages,
    }


def plot(result: dict[str, Any], out: Path) -> None:
    """One horizontal bar per stage, training in one colour and everything else in another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = dict(result["repro"]["stages_s"])
    if "import_s" in result:
        stages = {"import (make data)": result["import_s"], **stages}
    names = list(stages)[::-1]
    colours = ["tab:blue" if n in TRAINING else "tab:orange" for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    bars = ax.barh(names, [stages[n] for n in names], color=colours)
    ax.bar_label(bars, fmt="%.0f s", padding=3)
    whole = result.get("with_import", result["repro"])
    what = "make data + dvc repro" if "with_import" in result else "dvc repro"
    ax.set(xlabel="wall time (s)", title=f"{what} by stage: {whole['wall_s']:.0f} s\n"
           f"non-training {whole['non_training_share']:.0%}; no-op re-run {result['noop_repro']['wall_s']:.1f} s")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="dvc repro -f (every stage runs)")
    ap.add_argument("--import", dest="do_import", action="store_true", help="time `make data` first")
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    env_bin = Path(sys.executable).parent
    os.environ["PATH"] = f"{env_bin}{os.pathsep}{os.environ['PATH']}"  # headstart and dvc from this venv
    result: dict[str, Any] = {"load_avg_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    if args.do_import:
        t = time.perf_counter()
        subprocess.run(["make", "data"], check=True)
        result["import_s"] = round(time.perf_counter() - t, 2)
    run = timed_repro([*REPRO[:2], *(["-f"] if args.force else []), *REPRO[2:]])
    training = sum(v for k, v in run["stages_s"].items() if k in TRAINING)
    run["training_s"] = round(training, 2)
    run["non_training_share"] = round(1 - training / run["wall_s"], 3) if run["wall_s"] else None
    result["repro"] = run
    if "import_s" in result:  # a fresh machine's `make run`: the import is non-training time too
        wall = result["import_s"] + run["wall_s"]
        result["with_import"] = {"wall_s": round(wall, 2), "non_training_share": round(1 - training / wall, 3)}
    result["noop_repro"] = timed_repro(REPRO)
    result["noop_plain_dvc_repro"] = timed_repro(["dvc", "repro"])
    result["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))
    sys.exit(run["rc"] or result["noop_repro"]["rc"])


if __name__ == "__main__":
    main()
