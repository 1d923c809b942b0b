"""Fixtures for the pipeline tests: a compiled spec, a recording stand-in for the KFP API, and the tiny recipe
and run arguments the kfp.local runs use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


# params overrides and run arguments for kfp.local on the tiny 3-class data (tests/conftest.py)
TINY = [
    "train.shared.val_images_per_class=null",
    "train.shared.batch_size=16",
    "train.shared.patience=1",
    "train.finetune.probe_epochs=0",
    "evaluate.bootstrap_samples=200",
    "gate.bootstrap_samples=200",
    "register.serving_check_images=6",
    "validate.workers=1",
    "validate.label_set=null",
    "validate.min_images_per_class=1",
]
ARGS = {
    "backbone": "small_cnn",
    "weights": "none",
    "image_size": 32,
    "epochs": 1,
    "images_per_class": 0,
    "min_accuracy": 0.0,
    "min_gain_over_baseline": -1.0,
    "registered_model": "tiny-clf",
}


def outputs(run_dir: Path, task: str) -> dict[str, Any]:
    """The artifacts a kfp.local task reported (uri, metadata) by output name: kfp.local writes
    <root>/<run>/<task>/<output> plus each task's executor_output.json, where the Metrics and
    ClassificationMetrics values live, so a test reads what the Kubeflow UI would show."""
    data = json.loads((run_dir / task / "executor_output.json").read_text())
    return {name: arts["artifacts"][0] for name, arts in data.get("artifacts", {}).items()}


def load_spec(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, platform spec): the compiled YAML holds two documents."""
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The pipeline compiled from the repository's params.yaml with test images (once per session)."""
    from headstart.kfp.spec import compile as compile_spec

    out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compile_spec("registry.test/headstart:9.9", out, params_file=ROOT / "params.yaml")
    spec, platform = load_spec(out)
    return out, spec, platform


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeKfp:
    """Answers the calls kfp.Client makes to create experiments, runs and recurring runs."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, str] = field(default_factory=dict)

    def find(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _handler(state: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _reply(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Recorded:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            rec = Recorded(self.command, url.path, parse_qs(url.query), json.loads(raw) if raw else None)
            state.requests.append(rec)
            return rec

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            rec = self._record()
            if rec.path == "/apis/v2beta1/healthz":
                return self._reply({"multi_user": False})
            if rec.path == "/apis/v2beta1/experiments":
                wanted = (
                    json.loads(rec.query.get("filter", ["{}"])[0])
                    .get("predicates", [{}])[0]
                    .get("stringValue")
                )
                hits = [
                    {"experiment_id": i, "display_name": n}
                    for n, i in state.experiments.items()
                    if n == wanted
                ]
                return self._reply({"experiments": hits, "total_size": len(hits)} if hits else {})
            return self._reply({"error": f"no route {rec.path}"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            rec = self._record()
            if rec.path == "/apis/v2beta1/experiments":
                exp_id = f"exp-{len(state.experiments) + 1}"
                state.experiments[rec.body["display_name"]] = exp_id
                return self._reply({"experiment_id": exp_id, "display_name": rec.body["display_name"]})
            if rec.path == "/apis/v2beta1/runs":
                return self._reply(
                    {"run_id": "run-1", "display_name": rec.body["display_name"], "state": "PENDING"}
                )
            if rec.path == "/apis/v2beta1/recurringruns":
                return self._reply(
                    {
                        "recurring_run_id": "rr-1",
                        "display_name": rec.body["display_name"],
                        "status": "ENABLED",
                    }
                )
            return self._reply({"error": f"no route {rec.path}"}, 404)

    return Handler


@pytest.fixture
def fake_kfp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKfp]:
    """A KFP API stand-in on 127.0.0.1 that records every request (no KFP backend on these machines)."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json from the user
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    state = FakeKfp(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
