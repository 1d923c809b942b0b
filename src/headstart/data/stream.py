"""Stream a split through DataLoader workers, for data larger than memory.

A split is read in numbered parts (headstart.data.parts): a packed split's tar shards, or an ImageFolder's
files in fixed-size runs ("virtual shards"); everything below is the same for both forms.
Workers read parts, keep a seeded shuffle buffer, decode and resize with the preset, and hand the main
process chunks of uint8 NHWC samples; the main process cuts them into batches, pins them and copies them
to the device without blocking. Augmentation and normalisation stay in the engine, batched on the device.

The order of an epoch is a pure function of (seed, epoch, rank, world size, stream count): the split's
shards are permuted per epoch, rank r takes every world-th of them, and each of the rank's `streams`
(one per worker) takes every streams-th of those, through its own seeded shuffle buffer. A DataLoader
over an IterableDataset returns its workers' chunks round-robin, skipping a worker once it is exhausted,
so the sequence is deterministic; `epoch_batches(..., skip_steps=k)` rebuilds the sequence from step k
without decoding what it skips (each stream drops whole chunks undecoded, and the streams are rotated so
that the round-robin resumes at the stream it stopped in). That is what makes a mid-epoch resume
bit-identical on CPU.

Under DDP every rank yields exactly `steps` batches of batch_size / world: a rank whose shards run out
first starts its sequence again (DistributedSampler's padding, by repetition), one with more drops the
rest of that epoch; next epoch's permutation deals the shards anew.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from headstart.data import shards as shardlib
from headstart.data.parts import DEFAULT_CHUNK, DEFAULT_SHUFFLE_BUFFER, PartSource, ShardParts
from headstart.data.shards import Sample
from headstart.errors import ConfigError, DataError
from headstart.presets import Preset


@dataclass(frozen=True)
class StreamSplit:
    """A split that is streamed instead of decoded into memory: the engine's counterpart of `Split`.

    `source` holds the parts it is read in and how many samples each keeps (a per-class subset keeps
    some): shards, or an ImageFolder's virtual shards (headstart.data.parts)."""

    source: PartSource = field(repr=False)
    split: str
    classes: tuple[str, ...]
    preset: Preset
    seed: int
    workers: int
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    chunk: int = DEFAULT_CHUNK

    def __len__(self) -> int:
        return sum(self.source.counts)

    @property
    def parts(self) -> int:
        return len(self.source)

    @property
    def positions(self) -> int:
        """Samples' positions (as scoring_batches gives them) run over [0, positions)."""
        return self.source.positions

    @property
    def keep(self) -> frozenset[str] | None:
        return self.source.keep

    @property
    def streams(self) -> int:
        """Streams per rank: one per worker process (0 workers: one stream in the main process)."""
        return max(1, self.workers)


def open_split(
    root: shardlib.Root, split: str, preset: Preset, seed: int, workers: int,
    keep: frozenset[str] | None = None, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    cache_dir: Path | None = None, listed: list[tuple[str, int]] | None = None,
) -> StreamSplit:
    """The `split` of the packed dataset at `root`, ready to stream; `keep`: only the samples of these names.

    Without `keep` nothing but the index is read. With `keep`, each shard's kept count comes from the
    split's listing (`listed`, when the caller has it, else shards.split_items, remembered in `cache_dir` per
    shard sha256), and with `cache_dir` the kept samples are copied there once (shards.pack_subset, reused by
    later runs), so that an epoch reads only them; without it, every epoch reads the whole split and drops
    the rest."""
    check_workers(workers)
    index = shardlib.read_index(root)
    entries = shardlib.split_of(root, index, split).shards
    counts = tuple(s.count for s in entries)
    subset = None
    if keep is not None:
        listed = listed if listed is not None else shardlib.split_items(root, split, cache_dir)
        names = [name for name, _ in listed]  # index order, shard by shard
        starts = list(itertools.accumulate((s.count for s in entries), initial=0))
        counts = tuple(sum(name in keep for name in names[a:b]) for a, b in itertools.pairwise(starts))
        if cache_dir is not None:
            key = hashlib.blake2b(f"{split}|{'|'.join(s.sha256 for s in entries)}|{'|'.join(sorted(keep))}".encode(),
                                  digest_size=16).hexdigest()
            local = Path(cache_dir) / "subsets" / key
            subset = (str(local), shardlib.pack_subset(root, index, split, keep, counts, local))
    source = ShardParts(root=root if not isinstance(root, Path) else str(root), shards=entries, counts=counts,
                        n_classes=len(index.classes), keep=keep, subset=subset)
    return StreamSplit(source=source, split=split, classes=index.classes, preset=preset, seed=seed,
                       workers=workers, shuffle_buffer=shuffle_buffer)


def check_workers(workers: int) -> None:
    if workers < 0:
        raise ConfigError(f"loader_workers={workers}: use 0 (read in the main process) or more")


def fingerprint(data: StreamSplit) -> str:
    """What training sees: classes, preset and what the parts hold (shards: their sha256s and the kept names;
    an ImageFolder: its files' digests), without decoding an image."""
    text = f"v1|{data.split}|{'|'.join(data.classes)}|{data.preset.image_size}|{data.preset.channels}"
    return hashlib.blake2b((text + data.source.stamp()).encode(), digest_size=16).hexdigest()


# ---- the order of an epoch ----------------------------------------------------------------------------

def rank_shards(data: StreamSplit, epoch: int, rank: int, world: int) -> list[int]:
    """Indices of the parts (shards) that `rank` reads in `epoch`: a seeded permutation, every world-th."""
    n = data.parts
    if n < world:
        raise ConfigError(f"{data.source.where}: split {data.split!r} has {n} shard(s), fewer than the {world} "
                          "training processes; every process reads its own shards. Re-pack with a smaller --shard-size "
                          "(headstart data pack) or train with fewer processes.")
    gen = torch.Generator().manual_seed(data.seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)[rank::world].tolist()


def resume_plan(sizes: Sequence[int], chunk: int, skip: int) -> tuple[list[int], list[int], int]:
    """Where the round-robin over streams of `sizes` samples (in chunks of `chunk`) stands after `skip`
    samples: (whole chunks each stream skips, the streams still to read in the order the round-robin
    resumes, samples to drop from the first chunk read)."""
    left = [math.ceil(n / chunk) for n in sizes]
    done = [0] * len(sizes)
    position = 0
    while True:
        for s in range(len(sizes)):
            if done[s] == left[s]:
                continue
            size = min(chunk, sizes[s] - done[s] * chunk)
            if position + size > skip:  # stream s's next chunk holds sample `skip`
                active = [t for t in range(len(sizes)) if done[t] < left[t]]
                order = active[active.index(s):] + active[: active.index(s)]
                return done, order, skip - position
            position += size
            done[s] += 1
        if done == left:
            return done, [], 0


class _Chunks(IterableDataset):
    """One epoch's chunks for one rank; DataLoader worker w reads stream `order[w]`. `shuffle` False (scoring):
    no shuffle buffer, each stream reads its shards front to back."""

    def __init__(self, data: StreamSplit, epoch: int, rank: int, plan: list[tuple[int, list[int], int]],
                 shuffle: bool):
        super().__init__()
        self.data, self.epoch, self.rank, self.shuffle = data, epoch, rank, shuffle
        self.plan = plan  # per worker slot: (stream id, its shard indices, whole chunks to skip)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()  # None: no workers, the main process reads every stream
        for stream, shard_ids, skip_chunks in self.plan[info.id : info.id + 1] if info is not None else self.plan:
            # resumed: the skipped samples were trained on before the checkpoint; they are read, not decoded
            samples = itertools.islice(self._samples(stream, shard_ids), skip_chunks * self.data.chunk, None)
            while chunk := list(itertools.islice(samples, self.data.chunk)):
                yield _decode(chunk, self.data.preset)

    def _samples(self, stream: int, shard_ids: list[int]) -> Iterator[Sample]:
        data = self.data
        samples = itertools.chain.from_iterable(map(data.source.read, shard_ids))
        if not self.shuffle:
            yield from samples
            return
        key = f"{data.seed}|{self.epoch}|{self.rank}|{stream}".encode()
        rng = random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
        buffer: list[Sample] = []
        for sample in samples:
            if len(buffer) < data.shuffle_buffer:
                buffer.append(sample)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], sample = sample, buffer[j]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


def _decode(samples: list[Sample], preset: Preset) -> tuple[torch.Tensor, ...]:
    x = np.empty((len(samples), preset.image_size, preset.image_size, preset.channels), dtype=np.uint8)
    for i, sample in enumerate(samples):
        try:
            x[i] = preset.decode(sample.data)
        except DataError as exc:
            raise DataError(f"{sample.shard}: sample {sample.key} ({sample.name}): {exc}") from exc
    y = torch.tensor([s.label for s in samples], dtype=torch.int64)
    pos = torch.tensor([int(s.key) for s in samples], dtype=torch.int64)
    return torch.from_numpy(x), y, pos


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is PIL's; one thread per worker leaves the cores to the workers


def _pass(data: StreamSplit, epoch: int, rank: int, world: int, skip: int,
          shuffle: bool = True) -> Iterator[tuple[torch.Tensor, ...]]:
    """One pass over this rank's shards, from sample `skip` on, as chunks in the deterministic order
    (`shuffle` False: the shards in index order, for scoring)."""
    mine = rank_shards(data, epoch, rank, world) if shuffle else list(range(data.parts))[rank::world]
    streams = [mine[s :: data.streams] for s in range(data.streams)]  # each stream's shards, in reading order
    sizes = [sum(data.source.counts[i] for i in ids) for ids in streams]
    done, order, drop = resume_plan(sizes, data.chunk, skip)
    plan = [(s, streams[s], done[s]) for s in order]
    if not plan:
        return
    workers = data.workers and len(plan)
    # `generator`: a DataLoader draws its workers' base seed from it, else from torch's global RNG, which would
    # shift the training's dropout masks by one draw per epoch and break resume bit-identity
    loader = DataLoader(_Chunks(data, epoch, rank, plan, shuffle), batch_size=None, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    for x, y, pos in loader:
        if drop:
            x, y, pos, drop = x[drop:], y[drop:], pos[drop:], 0
        if len(y):
            yield x, y, pos


def epoch_batches(
    data: StreamSplit, epoch: int, batch_size: int, rank: int, world: int, steps: int,
    skip_steps: int = 0, device: torch.device | None = None, positions: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """This rank's batches of `epoch` from step `skip_steps` on: uint8 NHWC and int64 labels on `device`
    (`positions`: and the samples' positions in the split, on the CPU, as `scoring_batches` gives them).

    One process: the split once, in batches of `batch_size` (the last one short). Under DDP
    (`world` > 1): exactly `steps` batches of `batch_size` samples per rank (`batch_size` is the per-rank
    batch here), the rank's sequence repeated or cut to fill them."""
    per_pass = sum(data.source.counts[i] for i in rank_shards(data, epoch, rank, world))
    if per_pass == 0:
        raise DataError(f"{data.source.where}: split {data.split!r}: rank {rank} got no samples in epoch {epoch}")
    start = skip_steps * batch_size
    total = steps * batch_size if world > 1 else len(data)
    passes = range(1) if world == 1 else itertools.count()  # DDP: the rank's sequence again, to fill `steps`
    chunks = itertools.chain.from_iterable(_pass(data, epoch, rank, world, start % per_pass if i == 0 else 0)
                                           for i in passes)
    for xb, yb, pos in _rebatch(chunks, batch_size, total - start):
        yield (_to(xb, device), _to(yb, device), pos) if positions else (_to(xb, device), _to(yb, device))


def _to(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """Pinned host memory, then an asynchronous copy, when the device is a GPU (None: the CPU)."""
    return t.pin_memory().to(device, non_blocking=True) if device is not None and device.type == "cuda" else t


def _rebatch(
    chunks: Iterator[tuple[torch.Tensor, ...]], batch_size: int, limit: int,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Cut a stream of chunks (tuples of tensors with one row per sample) into batches of `batch_size`
    rows, the last one short, `limit` rows in all."""
    pending: list[tuple[torch.Tensor, ...]] = []
    held = emitted = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk[0])
        while held >= batch_size and emitted < limit:
            joined = [torch.cat(parts) for parts in zip(*pending, strict=True)]
            take = min(batch_size, limit - emitted)
            yield tuple(t[:take] for t in joined)
            pending = [tuple(t[take:] for t in joined)]
            held -= take
            emitted += take
        if emitted >= limit:
            return
    if held and emitted < limit:
        joined = [torch.cat(parts) for parts in zip(*pending, strict=True)]
        yield tuple(t[: limit - emitted] for t in joined)


# ---- in index order, for scoring ----------------------------------------------------------------------

def scoring_batches(
    data: StreamSplit, batch_size: int, rank: int = 0, world: int = 1, device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every sample of rank's share (shards rank::world) once, unshuffled, in batches of at most
    `batch_size`: (uint8 NHWC and labels on `device`, positions on the CPU).

    Positions are the samples' sequence numbers in the split (their keys), so predictions can be put back
    in index order whatever order the workers delivered them in."""
    chunks = _pass(data, 0, rank, world, 0, shuffle=False)
    for x, y, pos in _rebatch(chunks, batch_size, len(data)):
        yield _to(x, device), _to(y, device), pos

