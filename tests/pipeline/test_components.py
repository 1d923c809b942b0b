"""The components are wiring only: each body is one call into headstart.kfp.bodies with its own arguments, so
the logic KFP copies into the spec is tested as plain functions and nothing else runs in the image."""

from __future__ import annotations

import ast
import inspect

import pytest

from headstart.kfp import bodies
from headstart.kfp.components import evaluate, fetch, promote, register, train, train_distributed, validate

COMPONENTS = [
    fetch.resolve_data_rev, fetch.fetch_data, validate.validate_data, validate.data_rejected,
    train.train_candidate, train_distributed.train_distributed, train_distributed.stage_data,
    train_distributed.unstage_data, evaluate.evaluate_candidates, register.register_and_gate,
    promote.act_on_decision,
]


def test_the_pipeline_uses_every_component_listed_here():
    defined = {obj for m in (evaluate, fetch, promote, register, train, train_distributed, validate)
               for obj in vars(m).values() if inspect.isfunction(obj) and obj.__module__ == m.__name__}
    assert defined == set(COMPONENTS)


@pytest.mark.parametrize("func", COMPONENTS, ids=lambda f: f.__name__)
def test_a_component_body_is_one_call_into_the_library_with_every_argument(func):
    (node,) = ast.parse(inspect.getsource(func)).body
    docstring, imported, call = node.body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    assert ast.unparse(imported) == "from headstart.kfp import bodies"
    assert isinstance(call, ast.Return if node.returns else ast.Expr)
    assert ast.unparse(call.value.func) == f"bodies.{func.__name__}"
    params = list(inspect.signature(func).parameters)
    assert [(k.arg, ast.unparse(k.value)) for k in call.value.keywords] == [(p, p) for p in params]
    assert not call.value.args
    assert list(inspect.signature(getattr(bodies, func.__name__)).parameters) == params  # no drift


def test_the_bodies_import_without_kfp():
    """What a test or another driver calls needs no KFP: only the components' signatures use its types."""
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(bodies))):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported and not {m for m in imported if m == "kfp" or m.startswith("kfp.")}


def test_data_rejected_fails_the_run_naming_the_report():
    from types import SimpleNamespace

    from headstart.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"see the report \(minio://b/report\)\. No training"):
        bodies.data_rejected(SimpleNamespace(uri="minio://b/report"))


def test_unstage_data_with_nothing_staged_deletes_nothing(monkeypatch):
    from headstart.cluster import pytorchjob

    calls: list[str] = []
    monkeypatch.setattr(pytorchjob, "unstage", calls.append)
    bodies.unstage_data("")
    bodies.unstage_data("s3://b/staging/data-1/data.tar.gz")
    assert calls == ["s3://b/staging/data-1/data.tar.gz"]


def test_the_gate_outputs_are_the_components_named_tuple_in_order():
    """KFP reads a NamedTuple return by position: the body's tuple must list the component's fields in order."""
    annotation = inspect.signature(register.register_and_gate).return_annotation
    assert annotation._fields == bodies.GateOutputs._fields
