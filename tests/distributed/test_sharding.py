"""How a global batch is split across ranks, without starting any process group (fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headstart.config import load_params
from headstart.errors import ConfigError
from headstart.steps import train
from headstart.training import distributed
from headstart.training.engine import augment


def test_padding_repeats_the_head_like_distributed_sampler():
    order = torch.tensor([5, 3, 0, 4, 1])
    assert distributed.pad_for_world(order, 1) is order
    assert distributed.pad_for_world(order, 2).tolist() == [5, 3, 0, 4, 1, 5]
    assert distributed.pad_for_world(order, 4).tolist() == [5, 3, 0, 4, 1, 5, 3, 0]
    assert distributed.pad_for_world(order[:1], 3).tolist() == [5, 5, 5]


def test_rank_slices_of_each_global_batch_are_distributed_samplers_shards():
    """Taking rows rank::world of every global batch == DistributedSampler's shard order[rank::world]
    cut into per-rank batches of batch_size / world."""
    order, world, batch = distributed.pad_for_world(torch.randperm(37), 4), 4, 8
    for rank in range(world):
        ours = torch.cat([order[s : s + batch][rank::world] for s in range(0, len(order), batch)])
        assert torch.equal(ours, order[rank::world])


def test_global_batch_must_split_evenly():
    assert distributed.per_rank_batch(64, 4) == 16
    with pytest.raises(ConfigError, match=r"batch_size=10 .* 4 processes"):
        distributed.per_rank_batch(10, 4)


def test_each_sample_is_augmented_as_in_one_process():
    x = torch.randn(7, 1, 16, 16)
    whole = augment(x, torch.Generator().manual_seed(1), 0.2, True)
    padded = distributed.pad_for_world(torch.arange(7), 2)  # 8 rows, the last one a repeat of row 0
    for rank in range(2):
        pos = torch.arange(rank, 8, 2)
        part = augment(x[padded[pos]], torch.Generator().manual_seed(1), 0.2, True, drawn=7, pick=pos % 7)
        real = padded[pos] < 7
        assert torch.equal(part[real], whole[padded[pos]][real])


def test_lr_scaling_is_explicit():
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert train.config_from_params(params, "scratch", batch_size=256, lr_scaling="none").engine().lr_factor() == 1.0
    linear = train.config_from_params(params, "scratch", batch_size=256, lr_scaling="linear", lr_reference_batch=64)
    assert linear.engine().lr_factor() == 4.0


def test_helpers_are_no_ops_in_a_single_process():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.broadcast_bytes(b"abc") == b"abc"
    distributed.barrier()


def test_cli_rejects_a_global_batch_that_does_not_split_before_launching(tmp_path: Path):
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "headstart.cli", "train", "scratch", "--nproc", "3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    err = " ".join(out.stderr.split())  # rich wraps long lines
    assert "batch_size=64 is the global batch" in err and "across 3 processes" in err
    assert "Traceback" not in err and "torch.distributed" not in err
