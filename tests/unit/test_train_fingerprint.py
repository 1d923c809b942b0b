"""The checkpoint fingerprint is structural: a field counts when it is declared in `Recipe`, none is listed by hand."""

from __future__ import annotations

import typing

import pytest

from headstart.training.recipe import Recipe, TrainConfig
from tests.helpers import tiny_train_cfg


def _another(cfg: TrainConfig, name: str) -> object:
    """A value of field `name`'s type other than the one `cfg` has."""
    value, annotation = getattr(cfg, name), TrainConfig.model_fields[name].annotation
    literals = [c for arg in (annotation, *typing.get_args(annotation)) if typing.get_origin(arg) is typing.Literal
                for c in typing.get_args(arg)]
    if literals:
        return next(c for c in literals if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}-changed" if isinstance(value, str) else 1  # None: an int | None or str | None field


@pytest.mark.parametrize("name", sorted(TrainConfig.model_fields))
def test_a_field_changes_the_fingerprint_exactly_when_recipe_declares_it(name):
    cfg = tiny_train_cfg()
    changed = cfg.model_copy(update={name: _another(cfg, name)})
    assert getattr(changed, name) != getattr(cfg, name)
    assert (changed.fingerprint("data") != cfg.fingerprint("data")) == (name in Recipe.model_fields)


def test_what_only_changes_how_a_run_runs_is_declared_outside_the_recipe():
    how = set(TrainConfig.model_fields) - set(Recipe.model_fields)
    assert {"checkpoint_dir", "checkpoint_every_steps", "threads", "tensor_cache_dir", "tensor_cache_budget_gib",
            "tta"} <= how
    # each can change what is trained: the cosine's end, the sample order (memory vs stream, buffer, streams)
    assert {"max_steps", "data_loading", "shuffle_buffer", "loader_workers", "seed", "role"} <= set(Recipe.model_fields)

