"""The pipeline under kfp.local stops at validation when the data is bad: no training starts. (The whole loop
under kfp.local, on packed data fetched from a DVC remote, is tests/integration/test_kfp_local_loop.py.)"""

from __future__ import annotations

import pytest

from headstart.errors import ValidationFailed
from tests.conftest import make_imagefolder
from tests.pipeline.conftest import ARGS, ROOT, TINY

pytestmark = pytest.mark.slow


def test_invalid_data_stops_before_training(tmp_path, monkeypatch):
    from headstart.kfp.local import run_local

    data = make_imagefolder(tmp_path / "data", per_class={"train": 4, "val": 2, "test": 2})
    (data / "train" / "circle" / "broken.png").write_bytes(b"not a png")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationFailed, match="No training was started"):
        run_local(
            tmp_path / "root",
            params_file=ROOT / "params.yaml",
            overrides=[f"data.dir={data}", f"tracking.artifact_root={tmp_path}/a", *TINY],
            arguments=ARGS,
        )
    (run_dir,) = [p for p in (tmp_path / "root").iterdir() if p.name.startswith("headstart-retraining")]
    assert (run_dir / "validate-data").is_dir() and not (run_dir / "train-candidate").exists()
