"""The training step and engine on a tiny generated ImageFolder (1-2 epochs, 32 px)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from headstart.config import load_params
from headstart.data.imagefolder import list_classes, load_split
from headstart.models import build_model, head_and_backbone_params, modelio
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import recipe
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import fit, predict_logits
from tests.helpers import DiesAfterSaving, Killed, params_cfg, tiny_engine_cfg, tiny_train_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_finetune_step_writes_a_reloadable_model_and_logs_to_mlflow(tiny_imagefolder: Path, tmp_path: Path):
    import mlflow

    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"))
    cfg = tiny_train_cfg("finetune", backbone="efficientnet_lite0", weights="imagenet", channels=3, epochs=1)
    result = train.run(cfg, tiny_imagefolder, tmp_path / "ft", tracking)
    model, card = modelio.load(Path(result.model_dir))
    assert card.classes == ("circle", "square", "stripes")
    assert card.preset.mean == (0.5, 0.5, 0.5) and card.preset.image_size == 32
    assert (tmp_path / "ft" / "learning_curve.png").stat().st_size > 1000
    run = mlflow.get_run(result.run_id)
    assert run.data.params["backbone"] == "efficientnet_lite0" and run.data.params["weights"] == "imagenet"
    assert "val_accuracy" in run.data.metrics and "train_loss" in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_accuracy")
    assert [m.step for m in history] == [1]


def test_same_seed_same_cpu_gives_same_weights_and_metrics(tiny_imagefolder: Path, tmp_path: Path):
    a = train.run(tiny_train_cfg(), tiny_imagefolder, tmp_path / "a")
    b = train.run(tiny_train_cfg(), tiny_imagefolder, tmp_path / "b")
    assert a.best_val_accuracy == b.best_val_accuracy
    wa = (tmp_path / "a/model/model.safetensors").read_bytes()
    wb = (tmp_path / "b/model/model.safetensors").read_bytes()
    assert wa == wb


def test_scratch_learns_the_tiny_task(tiny_imagefolder: Path, tmp_path: Path):
    result = train.run(tiny_train_cfg(epochs=6, lr_head=0.01, lr_backbone=0.01), tiny_imagefolder, tmp_path / "s")
    assert result.best_val_accuracy >= 0.75  # 3 classes: chance is 0.33


def _setup(data: Path):
    classes = list_classes(data)
    torch.manual_seed(0)
    built = build_model("small_cnn", None, len(classes), in_channels=1)
    preset = Preset(32, 1, built.mean, built.std)
    tr = load_split(data, "train", preset, classes)
    va = load_split(data, "val", preset, classes)
    head, backbone = head_and_backbone_params(built)
    return built.model, head, backbone, preset, tr, va


def test_interrupted_training_resumes_to_the_same_weights(tiny_imagefolder: Path, tmp_path: Path):
    cfg = tiny_engine_cfg(epochs=3, batch_size=16, patience=10, seed=3)
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    full = fit(model, head, backbone, preset, tr, va, cfg)

    class Killed(Exception):
        pass

    def die_after_epoch_2(stats):
        if stats.epoch == 2:
            raise Killed

    ckpt = Checkpointer(tmp_path / "ckpt", "fp")
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    with pytest.raises(Killed):
        # the checkpoint is written after the callback, so the last one on disk is epoch 1
        fit(model, head, backbone, preset, tr, va, cfg, on_epoch=die_after_epoch_2, checkpointer=ckpt)
    assert [p.name for p in sorted((tmp_path / "ckpt" / "fp").glob("*.pt"))] == ["epoch-0001.pt"]
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    ckpt2 = Checkpointer(tmp_path / "ckpt", "fp")
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=ckpt2)
    assert resumed.resumed_from == 1
    assert [h.val_accuracy for h in resumed.history] == [h.val_accuracy for h in full.history]
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key


def test_mid_epoch_checkpoint_resumes_inside_the_epoch_to_identical_results(tiny_imagefolder: Path, tmp_path: Path):
    # 36 train images, batch 8: 5 steps per epoch, the last one short; a checkpoint every 2 steps
    cfg = tiny_engine_cfg(epochs=3, batch_size=8, patience=10, seed=3, checkpoint_every_steps=2, probe_epochs=1)
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    full = fit(model, head, backbone, preset, tr, va, cfg)

    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    with pytest.raises(Killed):  # global step 8 = epoch 2, step 3 of 5
        fit(model, head, backbone, preset, tr, va, cfg, checkpointer=DiesAfterSaving(tmp_path / "c", (2, 3)))
    assert sorted(p.name for p in (tmp_path / "c" / "fp").glob("*.pt")) == ["epoch-0002-step-00000001.pt",
                                                                       "epoch-0002-step-00000003.pt"]
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    ckpt = Checkpointer(tmp_path / "c", "fp")
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=ckpt)
    assert resumed.resumed_at == "epoch 2, step 3 of 5" and resumed.resumed_from == 1
    assert ckpt.resumed_from_uri.endswith("epoch-0002-step-00000003.pt")
    for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [getattr(h, field) for h in resumed.history] == [getattr(h, field) for h in full.history], field
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    for key, value in model.state_dict().items():
        assert torch.equal(value, full.best_state[key]), key


def test_a_torn_mid_epoch_checkpoint_falls_back_to_the_one_before(tiny_imagefolder: Path, tmp_path: Path):
    cfg = tiny_engine_cfg(epochs=2, batch_size=8, patience=10, checkpoint_every_steps=2)
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    with pytest.raises(Killed):
        fit(model, head, backbone, preset, tr, va, cfg, checkpointer=DiesAfterSaving(tmp_path / "c", (2, 3)))
    newest = tmp_path / "c" / "fp" / "epoch-0002-step-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:200])
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "fp"))
    assert resumed.resumed_at == "epoch 2, step 1 of 5"
    assert [h.epoch for h in resumed.history] == [1, 2]


def test_torn_checkpoint_falls_back_to_the_previous_one(tiny_imagefolder: Path, tmp_path: Path):
    cfg = tiny_engine_cfg(epochs=2, batch_size=16, patience=10)
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "fp"))
    newest = tmp_path / "c" / "fp" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # as if killed mid-write without the atomic rename
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    ckpt = Checkpointer(tmp_path / "c", "fp")
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=ckpt)
    assert resumed.resumed_from == 1


def test_checkpoint_of_another_config_is_not_used(tiny_imagefolder: Path, tmp_path: Path):
    cfg = tiny_engine_cfg(epochs=1, batch_size=16)
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "one"))
    model, head, backbone, preset, tr, va = _setup(tiny_imagefolder)
    result = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "two"))
    assert result.resumed_from is None


def test_predict_logits_matches_a_plain_forward(tiny_imagefolder: Path):
    model, _, _, preset, _, va = _setup(tiny_imagefolder)
    logits = predict_logits(model, preset, va.x, batch_size=5)
    model.eval()
    with torch.no_grad():
        plain = model(preset.normalize(va.x))
    assert torch.allclose(logits, plain, atol=1e-5)


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror(tiny_imagefolder: Path):
    model, _, _, preset, _, va = _setup(tiny_imagefolder)
    plain = predict_logits(model, preset, va.x, batch_size=5)
    mirrored = predict_logits(model, preset, va.x.flip(2), batch_size=5)  # NHWC: dim 2 is the width
    both = predict_logits(model, preset, va.x, batch_size=5, tta="flip")
    assert not torch.allclose(plain, mirrored)
    torch.testing.assert_close(both, (plain + mirrored) / 2, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="tta='rotate'"):
        predict_logits(model, preset, va.x, tta="rotate")


def test_flip_tta_needs_a_model_trained_with_flips():
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.finetune: .*tta: flip .*flip: false"):
        train.config_from_params(_params(shared={"tta": "flip", "flip": False}), "finetune")


def test_train_config_rejects_unknown_keys_naming_them():
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.finetune\.epoch: Extra inputs"):
        train.config_from_params(_params(finetune={"epoch": 3}), "finetune")


def _params(**sections: dict) -> dict:
    """params.yaml with some keys of train.<section> replaced."""
    params = load_params(ROOT / "params.yaml")
    for name, values in sections.items():
        params["train"][name].update(values)
    return params


class KilledAfterEpoch3(Checkpointer):
    """The train step's checkpointer, killed right after it saved epoch 3."""

    def save(self, model, opt, sched, gen, result, *args, partial=None, **kw) -> None:
        super().save(model, opt, sched, gen, result, *args, partial=partial, **kw)
        if partial is None and result.history[-1].epoch == 3:
            raise Killed


def test_a_new_config_resumes_after_another_filled_the_checkpoint_folder(
    tiny_imagefolder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A ran more epochs than the folder keeps; B, killed after epoch 3, resumes from epoch 3."""
    ckpt = str(tmp_path / "ckpt")
    a_cfg = tiny_train_cfg(epochs=5, patience=5, checkpoint_dir=ckpt)
    assert train.run(a_cfg, tiny_imagefolder, tmp_path / "a").epochs_run == 5
    b_cfg = tiny_train_cfg(epochs=4, patience=4, lr_head=0.01, checkpoint_dir=ckpt)
    with monkeypatch.context() as m:
        m.setattr(train, "Checkpointer", KilledAfterEpoch3)
        with pytest.raises(Killed):
            train.run(b_cfg, tiny_imagefolder, tmp_path / "b")
    b = train.run(b_cfg, tiny_imagefolder, tmp_path / "b")
    assert b.resumed_from == 3 and b.epochs_run == 4
    assert train.run(a_cfg, tiny_imagefolder, tmp_path / "a2").resumed_from == 5  # A's are still there too


def test_one_changed_training_image_retrains_a_forced_rerun_on_the_same_data_resumes(
    tiny_imagefolder: Path, tmp_path: Path
):
    """data.dvc stays as it was (the images were edited without `dvc add`): the fingerprint must see the data."""
    import numpy as np
    from PIL import Image

    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    cfg = tiny_train_cfg(epochs=2, checkpoint_dir=str(tmp_path / "ckpt"), tensor_cache_dir=str(tmp_path / "cache"))
    first = train.run(cfg, tiny_imagefolder, tmp_path / "a")
    assert first.resumed_from is None
    forced = train.run(cfg, tiny_imagefolder, tmp_path / "b")  # `dvc repro -f`, same data: nothing to train
    assert forced.resumed_from == 2
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")

    image = sorted((tiny_imagefolder / "train" / "circle").glob("*.png"))[0]
    Image.fromarray(255 - np.asarray(Image.open(image))).save(image)
    changed = train.run(cfg, tiny_imagefolder, tmp_path / "c")
    assert changed.resumed_from is None and changed.resumed_at is None  # trained afresh, both epochs
    assert [h["epoch"] for h in _history(tmp_path / "c")] == [1, 2]
    assert _weights(tmp_path / "c") != _weights(tmp_path / "a")


def _weights(out: Path) -> bytes:
    return (out / "model" / "model.safetensors").read_bytes()


def _history(out: Path) -> list[dict]:
    import json

    return json.loads((out / "history.json").read_text())


def test_the_data_fingerprint_is_the_loaded_content(tiny_imagefolder: Path):
    classes = list_classes(tiny_imagefolder)
    preset = Preset(32, 1, (0.5,), (0.5,))
    split = load_split(tiny_imagefolder, "train", preset, classes)
    key = recipe.data_fingerprint(split)
    assert recipe.data_fingerprint(load_split(tiny_imagefolder, "train", preset, classes)) == key
    relabelled = dataclasses.replace(split, y=split.y.flip(0))
    assert recipe.data_fingerprint(relabelled) != key
    edited = split.x.clone()
    edited[0, 0, 0, 0] ^= 1
    assert recipe.data_fingerprint(dataclasses.replace(split, x=edited)) != key


def test_a_bad_shared_key_is_named_as_written_under_train_shared():
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        train.config_from_params(_params(shared={"epochs": "many"}), "finetune")
    assert "train.shared.epochs: Input should be a valid integer" in str(err.value)
    assert "train.finetune.epochs" not in str(err.value)


def test_a_bad_role_key_is_named_under_its_role_even_when_shared_sets_it_too():
    from headstart.errors import ConfigError

    params = _params(shared={"lr_head": 0.01}, scratch={"lr_head": "fast"})
    with pytest.raises(ConfigError, match=r"train\.scratch\.lr_head: Input should be a valid number"):
        train.config_from_params(params, "scratch")


def test_the_cli_names_the_shared_key_a_set_override_broke(capsys, tmp_path: Path):
    from headstart.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "scratch", "--data", str(tmp_path / "none"), "--params", str(ROOT / "params.yaml"),
              "--set", "train.shared.batch_size=big"])
    assert exit_.value.code != 0
    out = " ".join(capsys.readouterr().err.split())
    assert "train.shared.batch_size: Input should be a valid integer" in out and "train.scratch.batch" not in out
