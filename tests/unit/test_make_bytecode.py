"""setup installs without byte-compiling, so the commands make runs must be free to cache bytecode. Where the
environment sets PYTHONDONTWRITEBYTECODE (this kind of VM does), a fresh venv never got any, and every process
of `make run` and `make test` compiled torch and mlflow from source again (+8 s a process)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_commands_make_runs_may_write_bytecode_whatever_the_environment_says() -> None:
    probe = 'probe: ; @python3 -c "import sys; print(sys.dont_write_bytecode)"'
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "--eval", probe, "probe"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
