"""Positive-congruent training (headstart.training.congruent): focal distillation from the champion, on tiny data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from headstart.config import load_params
from headstart.data.imagefolder import list_classes, load_split
from headstart.models import build_model, head_and_backbone_params
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import congruent, recipe
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import fit
from tests.conftest import make_imagefolder
from tests.helpers import DiesAfterSaving, Killed, params_cfg

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**kw) -> recipe.TrainConfig:
    """params.yaml's finetune recipe on small_cnn, shrunk to the tiny dataset (32 px, 2 epochs, batch 16);
    plain training unless a test turns `congruent` on."""
    base = dict(backbone="small_cnn", weights="none", channels=1, image_size=32, epochs=2, patience=3, tta="none",
                images_per_class=None, val_images_per_class=None, checkpoint_dir=None, tensor_cache_dir=None,
                batch_size=16, congruent=False)
    return train.config_from_params(load_params(ROOT / "params.yaml"), "finetune", **{**base, **kw})


def _weights(result: train.TrainResult) -> bytes:
    return (Path(result.model_dir) / "model.safetensors").read_bytes()


@pytest.fixture
def champion(tiny_imagefolder: Path, tmp_path: Path) -> Path:
    """A champion trained at 28 px (the candidates train at 32): its logits need its own preset."""
    return Path(train.run(_cfg(seed=7, image_size=28, epochs=1), tiny_imagefolder, tmp_path / "champ").model_dir)


def test_focal_weights_are_alpha_plus_beta_where_the_champion_is_right_and_alpha_elsewhere():
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 4.0]])
    y = torch.tensor([0, 0, 2, 1])
    assert congruent.focal_weights(teacher, y, alpha=1.0, beta=5.0).tolist() == [6.0, 1.0, 6.0, 1.0]
    assert congruent.focal_weights(teacher, y, alpha=0.5, beta=0.0).tolist() == [0.5] * 4


def test_focal_distillation_is_the_weighted_mean_of_tempered_kl_and_zero_on_the_champions_outputs():
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5]])
    y = torch.tensor([0, 0])  # the champion is right on the first image only
    t = 2.0
    p = F.softmax(teacher / t, 1)
    kl = (p * (p.log() - F.log_softmax(student / t, 1))).sum(1)
    expected = (6.0 * kl[0] + 1.0 * kl[1]) / 2 * t * t
    got = congruent.focal_distillation(student, teacher, y, alpha=1.0, beta=5.0, temperature=t)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert congruent.focal_distillation(teacher, teacher, y, 1.0, 5.0, t).item() == pytest.approx(0.0, abs=1e-7)
    loose = congruent.Teacher(logits=teacher, weight=0.5, alpha=1.0, beta=5.0, temperature=t, source="test")
    assert loose.loss(student, teacher, y).item() == pytest.approx(0.5 * expected.item(), rel=1e-6)


def test_the_champions_logits_are_computed_once_per_run_and_change_the_training(
    tiny_imagefolder: Path, tmp_path: Path, champion: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    calls: list[tuple[int, ...]] = []
    real = congruent.predict_logits

    def counting(model, preset, x, *args, **kw):
        calls.append(tuple(x.shape))
        return real(model, preset, x, *args, **kw)

    monkeypatch.setattr(congruent, "predict_logits", counting)
    plain = train.run(_cfg(epochs=3), tiny_imagefolder, tmp_path / "plain")
    assert calls == []
    pc = train.run(_cfg(epochs=3, congruent=True), tiny_imagefolder, tmp_path / "pc", champion_dir=champion)
    assert calls == [(36, 28, 28, 1)]  # once, over the 36 training images decoded at the champion's 28 px
    assert pc.congruent == f"distilling from champion {champion}"
    assert "positive-congruent training: distilling from champion" in capsys.readouterr().err
    assert pc.epochs_run == 3  # (learning itself: test_train.py::test_scratch_learns_the_tiny_task)
    assert _weights(pc) != _weights(plain)  # the distillation term changed the updates


def test_without_a_champion_in_the_registry_the_option_does_nothing_and_says_so(
    tiny_imagefolder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                          registered_model="nobody-promoted-yet")
    plain = train.run(_cfg(), tiny_imagefolder, tmp_path / "plain")
    first = train.run(_cfg(congruent=True), tiny_imagefolder, tmp_path / "first", tracking)
    assert first.congruent == "no champion in nobody-promoted-yet yet: trained without distillation"
    assert "no champion in nobody-promoted-yet yet" in capsys.readouterr().err
    assert _weights(first) == _weights(plain)


def test_a_champion_trained_on_other_classes_is_skipped_with_a_message(tmp_path: Path, tiny_imagefolder: Path):
    other = make_imagefolder(tmp_path / "other", classes=("circle", "square", "stripes", "dots"), seed=1)
    old = Path(train.run(_cfg(epochs=1), other, tmp_path / "old").model_dir)
    plain = train.run(_cfg(), tiny_imagefolder, tmp_path / "plain")
    pc = train.run(_cfg(congruent=True), tiny_imagefolder, tmp_path / "pc", champion_dir=old)
    assert pc.congruent is not None and "trained on other classes (circle, dots, square, stripes;" in pc.congruent
    assert _weights(pc) == _weights(plain)


def test_a_congruent_run_resumed_mid_epoch_ends_bit_identical(tiny_imagefolder: Path, tmp_path: Path, champion: Path):
    cfg = dataclasses.replace(_cfg().engine(), epochs=3, batch_size=8, patience=10, seed=3, checkpoint_every_steps=2,
                              probe_epochs=1)
    classes = list_classes(tiny_imagefolder)

    def setup():
        torch.manual_seed(0)
        built = build_model("small_cnn", None, len(classes), in_channels=1)
        preset = Preset(32, 1, built.mean, built.std)
        tr = load_split(tiny_imagefolder, "train", preset, classes)
        va = load_split(tiny_imagefolder, "val", preset, classes)
        # each attempt computes the champion's logits afresh, as a restarted pod does
        teacher = congruent.teacher(champion, "champion", tr, classes,
                                    lambda p: load_split(tiny_imagefolder, "train", p, classes), 1.0, 1.0, 5.0, 2.0)
        assert isinstance(teacher, congruent.Teacher)
        head, backbone = head_and_backbone_params(built)
        return built.model, head, backbone, preset, tr, va, teacher

    model, head, backbone, preset, tr, va, teacher = setup()
    full = fit(model, head, backbone, preset, tr, va, cfg, teacher=teacher)
    model, head, backbone, preset, tr, va, teacher = setup()
    with pytest.raises(Killed):  # epoch 2, step 3 of 5
        fit(model, head, backbone, preset, tr, va, cfg, checkpointer=DiesAfterSaving(tmp_path / "c", (2, 3)),
            teacher=teacher)
    model, head, backbone, preset, tr, va, teacher = setup()
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "fp"),
                  teacher=teacher)
    assert resumed.resumed_at == "epoch 2, step 3 of 5"
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert [getattr(h, name) for h in resumed.history] == [getattr(h, name) for h in full.history], name
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key


def test_the_checkpoint_fingerprint_changes_with_the_champion(
    tiny_imagefolder: Path, tmp_path: Path, champion: Path,
):
    """A resume never continues a run that distilled from another champion (or from none)."""
    other = Path(train.run(_cfg(seed=8, epochs=1), tiny_imagefolder, tmp_path / "champ2").model_dir)
    cfg = _cfg(congruent=True, checkpoint_dir=str(tmp_path / "ckpt"), epochs=1)
    train.run(cfg, tiny_imagefolder, tmp_path / "a", champion_dir=champion)
    train.run(cfg, tiny_imagefolder, tmp_path / "b", champion_dir=other)
    again = train.run(cfg, tiny_imagefolder, tmp_path / "c", champion_dir=champion)
    assert len([p for p in (tmp_path / "ckpt" / "finetune").iterdir() if p.is_dir()]) == 2
    assert again.resumed_from == 1  # the same champion: the finished run is found


@pytest.mark.parametrize("form", ["packed", "folder"])
def test_a_streamed_split_distils_from_memory_mapped_logits_equal_to_the_decoded_ones(
    tiny_imagefolder: Path, tmp_path: Path, champion: Path, form: str,
):
    """Streaming either form: one scoring pass into a .npy, a row per sample position, the same logits as in
    memory; and a run killed mid-epoch resumes bit-identical."""
    from headstart.data import shards, stream
    from headstart.data.dataset import open_dataset

    shards.pack(tiny_imagefolder, tmp_path / "shards", target_shard_bytes=4096)  # several shards per split
    data = open_dataset(tmp_path / "shards" if form == "packed" else tiny_imagefolder)
    classes = data.classes()
    preset = Preset(32, 1, (0.5,), (0.5,))
    decoded = data.load("train", preset, classes)
    listing = data.items("train")
    position_row = [int(i) for i in listing.positions.argsort()]  # the load-order row of each stream position
    in_memory = congruent.teacher(champion, "c", decoded, classes, lambda p: data.load("train", p, classes),
                                  1.0, 1.0, 5.0, 2.0)

    def streamed_teacher(folder: Path) -> tuple[stream.StreamSplit, congruent.Teacher]:
        split = data.stream("train", preset, seed=3, workers=2, shuffle_buffer=8)
        made = congruent.teacher(champion, "c", split, classes, lambda p: data.load("train", p, classes),
                                 1.0, 1.0, 5.0, 2.0, workdir=folder)
        assert isinstance(made, congruent.Teacher)
        return split, made

    split, streamed = streamed_teacher(tmp_path / "t0")
    assert isinstance(in_memory, congruent.Teacher) and (tmp_path / "t0" / "champion_logits.npy").is_file()
    assert torch.allclose(streamed.logits, in_memory.logits[position_row], atol=1e-5)

    cfg = dataclasses.replace(_cfg().engine(), epochs=2, batch_size=8, patience=10, seed=3, checkpoint_every_steps=2)

    def attempt(folder: str, checkpointer: Checkpointer | None):
        torch.manual_seed(0)
        built = build_model("small_cnn", None, len(classes), in_channels=1)
        head, backbone = head_and_backbone_params(built)
        split, made = streamed_teacher(tmp_path / folder)
        val = data.load("val", preset, classes)
        return fit(built.model, head, backbone, preset, split, val, cfg, checkpointer=checkpointer, teacher=made)

    full = attempt("t1", None)
    with pytest.raises(Killed):
        attempt("t2", DiesAfterSaving(tmp_path / "c", (2, 3)))
    resumed = attempt("t3", Checkpointer(tmp_path / "c", "fp"))
    assert resumed.resumed_at == "epoch 2, step 3 of 5"
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    step = train.run(_cfg(congruent=True, data_loading="stream", loader_workers=0, epochs=1), data,
                     tmp_path / "step", champion_dir=champion)  # its temporary .npy is gone, the map is not
    assert step.congruent == f"distilling from champion {champion}" and step.epochs_run == 1
