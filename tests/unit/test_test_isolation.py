"""A test's environment does not outlive it: MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ,
and the next test in the same process (an xdist worker runs many) would send its requests to a stopped server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_an_environment_variable_a_test_set_is_gone_for_the_next_test(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the inner run inherits this process's environment
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    pytester.makepyfile(test_env="import mlflow, os\n\n"
                                 "def test_a_sets_the_tracking_uri():\n"
                                 "    mlflow.set_tracking_uri('http://127.0.0.1:9')\n"
                                 "    assert os.environ.get('MLFLOW_TRACKING_URI') == 'http://127.0.0.1:9'\n\n"
                                 "def test_b_does_not_inherit_it():\n"
                                 "    assert 'MLFLOW_TRACKING_URI' not in os.environ\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=2)
