"""A test that skips without the `gpu` marker fails the run, in one process and under xdist (make test's -n);
a gpu test that skips is named in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
MARKERS = "[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_an_unmarked_skip_fails_the_run_and_is_named(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_x="import pytest\n\ndef test_ok():\n    pass\n\n"
                               "def test_quietly_off():\n    pytest.skip('tool missing')\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*UNEXPECTED SKIPS*", "*test_x.py::test_quietly_off (*tool missing)*"])


def test_a_gpu_test_may_skip_and_the_summary_names_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_y="import pytest\n\n@pytest.mark.gpu\n"
                               "@pytest.mark.skipif(True, reason='needs a CUDA GPU')\ndef test_cuda():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped for want of a CUDA GPU*", "*test_y.py::test_cuda (*needs a CUDA GPU)*"])
