"""The containerized pipeline against the subprocess one, in one run (issue 15). `make bench-containers`.

Measures, on this machine:
- image rebuild after a one-line change under src/ (a throw-away copy of the build context and tag), and a
  rebuild with nothing changed; the cold build time is what `make images` printed on a fresh machine (README);
- image sizes (engine's own figure);
- container start-up: `run --rm IMAGE true`, median of 5, against starting the image's Python (`python -c pass`);
- the whole pipeline on the same tiny dataset (the container tests' stack: PostgreSQL + S3 + basic-auth MLflow,
  DVC remote on moto, git daemon) with runner=docker against runner=subprocess: wall time and the ratio.
Results: benchmarks/results/containers.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "tools" / "containers.conf"))


def _timed(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - start


def rebuilds(engine: str) -> dict[str, float]:
    """No change, then one comment line added under src/, in a copy of the context (the real tree untouched)."""
    out = {"rebuild_unchanged_s": _timed(["bash", "tools/images.sh"], cwd=ROOT)}
    with tempfile.TemporaryDirectory(prefix="headstart-ctx-") as tmp:
        ctx = Path(tmp) / "ctx"
        skip = {".git", ".venv", ".venv-lint", "data", "mlflow", "outputs", ".headstart", "tests", "benchmarks"}
        shutil.copytree(ROOT, ctx, ignore=lambda d, names: [n for n in names if Path(d) == ROOT and n in skip])
        init = ctx / "src" / "headstart" / "__init__.py"
        init.write_text(init.read_text() + f"# benchmark rebuild {time.time()}\n")
        env = {**os.environ, "IMAGE": "localhost/headstart-bench", "TAG": "src-change"}
        out["rebuild_src_change_s"] = _timed(["bash", str(ctx / "tools" / "images.sh")], cwd=ctx, env=env)
        for tag in ("src-change", "src-change-cuda"):
            subprocess.run([engine, "rmi", f"localhost/headstart-bench:{tag}"], check=False, capture_output=True)
    return out


def startup(engine: str, image: str) -> dict[str, float]:
    run = [engine, "run", "--rm", "--network", "host", image]
    for _ in range(2):  # warm the engine's caches
        _timed([*run, "true"])
    container = statistics.median(_timed([*run, "true"]) for _ in range(5))
    python = statistics.median(_timed([*run, "python", "-c", "pass"]) for _ in range(5))
    return {"container_start_s": round(container, 3), "container_start_python_s": round(python, 3)}


def pipelines() -> dict[str, float]:
    import pytest
    from tests.containers.stack import production_stack
    from tests.containers.test_pipeline_in_containers import run_pipeline

    out = {}
    with tempfile.TemporaryDirectory(prefix="headstart-bench-") as tmp, production_stack(Path(tmp)) as stack:
        for runner in ("subprocess", "docker"):
            mp = pytest.MonkeyPatch()
            try:
                mp.chdir(tmp)  # the subprocess runner's relative paths (caches) land in tmp
                start = time.perf_counter()
                run_pipeline(stack, Path(tmp) / f"root-{runner}", mp, runner=runner,
                             registered_model=f"bench-{runner}")
                out[f"pipeline_{runner}_s"] = round(time.perf_counter() - start, 1)
            finally:
                mp.undo()
    out["pipeline_docker_over_subprocess"] = round(out["pipeline_docker_s"] / out["pipeline_subprocess_s"], 3)
    return out


def main() -> None:
    from headstart.kfp.local import default_image

    engine = shutil.which("docker") if os.environ.get("DOCKER_HOST") else shutil.which("podman")
    image = default_image()
    sizes = {}
    for ref in (image, image + "-cuda"):
        size = subprocess.run([engine, "image", "inspect", "-f", "{{.Size}}", ref], capture_output=True, text=True,
                              check=True).stdout.strip()
        sizes[ref] = round(int(size) / 1e9, 2)
    result = {"engine": Path(engine).name, "image_gb": sizes, **rebuilds(engine), **startup(engine, image),
              **pipelines(), "cpus": os.cpu_count()}
    out = ROOT / "benchmarks" / "results" / "containers.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
