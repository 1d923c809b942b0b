"""The process group for DistributedDataParallel, as torchrun (or the Kubeflow training operator) sets it up.

torchrun exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE unset or 1
every helper here is a no-op, so a plain `python` run is the single-process path it always was.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from headstart.errors import ConfigError

DEFAULT_TIMEOUT_S = 1800.0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> bool:
    """Join the process group described by torchrun's variables; True when running distributed.

    Idempotent. `HEADSTART_DIST_TIMEOUT` (seconds) bounds how long a collective waits for a lost peer.
    """
    if is_distributed():
        return True
    if env_world_size() <= 1 or not dist.is_available():
        return False
    timeout = float(os.environ.get("HEADSTART_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
    return True


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 alone writes checkpoints, model folders and MLflow records."""
    return rank() == 0


def per_rank_batch(global_batch: int, world: int) -> int:
    """`batch_size` is the global batch; each rank takes an equal share of it."""
    if global_batch % world:
        raise ConfigError(
            f"batch_size={global_batch} is the global batch and must divide evenly across {world} "
            f"processes; choose a multiple of {world}."
        )
    return global_batch // world


def pad_for_world(order: torch.Tensor, world: int) -> torch.Tensor:
    """DistributedSampler's padding: repeat the head of the order so every rank gets as many samples."""
    extra = -len(order) % world
    if extra == 0:
        return order
    return torch.cat([order, order.repeat(extra // len(order) + 1)[:extra]])


def _comm_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum plain numbers (metric sums and counts) over all ranks, in float64."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_bytes(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's uint8 tensor of the same length (used for the per-rank RNG states)."""
    if not is_distributed():
        return [t]
    local = t.to(_comm_device())
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [o.cpu() for o in out]


def broadcast_bytes(data: bytes | None) -> bytes:
    """Rank 0's `data` on every rank (others pass None); b"" stands for nothing."""
    if not is_distributed():
        return data or b""
    device = _comm_device()
    size = torch.tensor([len(data or b"") if is_main() else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    n = int(size.item())
    if n == 0:
        return b""
    if is_main():
        buf = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return buf.cpu().numpy().tobytes()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Make every rank's buffers (BatchNorm running statistics) rank 0's, as DDP does before a forward."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
