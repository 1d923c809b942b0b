"""The numbered parts a streamed split is read in: a packed split's tar shards, or an ImageFolder's files
cut into fixed-size runs ("virtual shards").

The stream engine (headstart.data.stream) permutes parts per epoch, deals them to ranks and workers,
shuffles within a buffer and resumes mid-epoch; it needs from a part only its samples in a fixed order.
Both sources give it the same `Sample` records (name, label, the image's bytes, its position in the
split), so the order of an epoch, a resume and DDP's split of the data are the same code for both forms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from headstart.data import shards as shardlib
from headstart.data.imagefolder import file_digests
from headstart.data.shards import Sample
from headstart.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 2048  # samples each stream shuffles among
DEFAULT_CHUNK = 32  # samples a worker decodes and hands over at a time
FILES_PER_PART = 256  # an ImageFolder's virtual shard: about one packed shard's worth of small images...
MIN_PARTS = 64  # ...but cut smaller on a small split, so that its parts still spread over workers and ranks


@dataclass(frozen=True)
class ShardParts:
    """A packed split's shards; `keep`: only the samples of these names (`counts` per shard), read from
    `subset` (shards.pack_subset's copy: its root and tars, one per source shard) when there is one."""

    root: shardlib.Root
    shards: tuple[shardlib.ShardInfo, ...]
    counts: tuple[int, ...]
    n_classes: int
    keep: frozenset[str] | None = field(default=None, repr=False)
    subset: tuple[str, tuple[shardlib.ShardInfo, ...]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def where(self) -> str:
        return str(self.root)

    @property
    def positions(self) -> int:
        return sum(s.count for s in self.shards)

    def read(self, i: int) -> Iterator[Sample]:
        if not self.counts[i]:
            return
        if self.subset is not None:
            yield from shardlib.iter_shard(self.subset[0], self.subset[1][i], self.n_classes)
            return
        for sample in shardlib.iter_shard(self.root, self.shards[i], self.n_classes):
            if self.keep is None or sample.name in self.keep:
                yield sample

    def stamp(self) -> str:
        """Each shard's sha256 (checked against the shards by validation) and the kept names."""
        text = "".join(f"|{s.file}|{s.sha256}|{n}" for s, n in zip(self.shards, self.counts, strict=True))
        return text + ("|".join(sorted(self.keep)) if self.keep is not None else "")


@dataclass(frozen=True)
class FileParts:
    """An ImageFolder split's files (`names` relative to the split folder, in load order: class, then name),
    read in the order of their names' sha256 (class-mixed, as `headstart data pack` orders a shard) and cut
    into runs of `size` files. A sample's position is its load-order row."""

    root: str
    split: str
    names: tuple[str, ...] = field(repr=False)
    labels: tuple[int, ...] = field(repr=False)
    size: int
    digests_dir: Path | None = field(default=None, repr=False)  # imagefolder.file_digests' store, for stamp()
    keep: frozenset[str] | None = field(default=None, repr=False)  # the names are the subset already

    @cached_property
    def order(self) -> tuple[int, ...]:
        return tuple(sorted(range(len(self.names)), key=lambda r: hashlib.sha256(self.names[r].encode()).digest()))

    def __len__(self) -> int:
        return -(-len(self.names) // self.size)

    @property
    def where(self) -> str:
        return f"{self.root}/{self.split}"

    @property
    def counts(self) -> tuple[int, ...]:
        n = len(self.names)
        return tuple(min(self.size, n - i * self.size) for i in range(len(self)))

    @property
    def positions(self) -> int:
        return len(self.names)

    def read(self, i: int) -> Iterator[Sample]:
        folder = Path(self.root) / self.split
        for row in self.order[i * self.size : (i + 1) * self.size]:
            path = folder / self.names[row]
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DataError(f"{path}: cannot read ({exc}); the ImageFolder changed since it was listed: "
                                "re-run the step (headstart validate checks every file)") from exc
            yield Sample(key=f"{row:09d}", name=self.names[row], label=self.labels[row], data=data,
                         ext=path.suffix.lower().lstrip("."), shard=str(path))

    def stamp(self) -> str:
        """Every file's name, label and content digest (imagefolder.file_digests: each file's bytes are read
        once, then remembered by size, mtime and inode in `digests_dir`), and the part size."""
        folder = Path(self.root) / self.split
        digests = file_digests([folder / n for n in self.names], self.digests_dir)
        body = "".join(f"|{n}|{c}|{d}" for n, c, d in zip(self.names, self.labels, digests, strict=True))
        return f"|files|{self.size}{body}"


def part_size(n: int) -> int:
    """Files per virtual shard for a split of `n`: FILES_PER_PART, smaller where that would give fewer than
    MIN_PARTS parts. A pure function of `n`, so a resumed run cuts the split the same way."""
    return max(1, min(FILES_PER_PART, n // MIN_PARTS))


PartSource = ShardParts | FileParts
