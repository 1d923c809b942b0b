"""One interface to a dataset, whichever form it is stored in; the only place that tells the forms apart.

`open_dataset(root)` gives a `FolderDataset` for an ImageFolder (`<root>/<split>/<class>/<file>`) or a
`PackedDataset` for tar shards with an index.json (a folder, an s3:// prefix, or a DVC remote's RemoteRoot).
Both list, count, load into memory (with the tensor cache), stream through DataLoader workers (the same
engine: headstart.data.stream) and fingerprint a split. `load_or_stream` holds the one rule that chooses
memory or streaming, from counts alone (timm's `create_reader` behind one `ImageDataset` is the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from headstart import storage
from headstart.data import shards
from headstart.data.folder import FolderDataset
from headstart.data.listing import Listing
from headstart.data.packed import PackedDataset
from headstart.data.parts import DEFAULT_SHUFFLE_BUFFER

if TYPE_CHECKING:  # torch: validation opens a dataset without it
    from headstart.data.imagefolder import Split
    from headstart.data.stream import StreamSplit
    from headstart.presets import Preset

Loading = Literal["auto", "memory", "stream"]


class Dataset(Protocol):
    form: Literal["folder", "packed"]  # for the validation step's scanners alone

    def classes(self, split: str = "train") -> tuple[str, ...]: ...

    def require_classes(self, split: str, classes: tuple[str, ...], whose: str) -> None: ...

    def items(self, split: str, per_class: int | None = None, seed: int = 0,
              cache_dir: Path | None = None) -> Listing: ...

    def count(self, split: str, per_class: int | None = None) -> int: ...

    def load(self, split: str, preset: Preset, classes: tuple[str, ...], per_class: int | None = None,
             seed: int = 0, cache_dir: Path | None = None, cache_budget_bytes: int | None = None) -> Split: ...

    def stream(self, split: str, preset: Preset, seed: int, workers: int, per_class: int | None = None,
               shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
               cache_dir: Path | None = None) -> StreamSplit: ...

    def fingerprint(self, split: str, classes: tuple[str, ...], cache_dir: Path | None = None) -> str: ...

    def image_files(self, names: list[str], dest: Path) -> list[Path]: ...


def open_dataset(root: shards.Root | Dataset) -> Dataset:
    """The dataset at `root`: packed when it has an index.json (s3:// and DVC remotes hold packed ones only)."""
    if isinstance(root, FolderDataset | PackedDataset):
        return root
    if isinstance(root, shards.RemoteRoot) or storage.is_s3(root) or shards.is_sharded(root):
        return PackedDataset(root)
    return FolderDataset(Path(root))


@dataclass(frozen=True)
class LoadOptions:
    """How a step reads its splits: its `data_loading`, `memory_budget_gib` and reader knobs."""

    mode: Loading
    memory_budget_gib: float
    seed: int = 0
    workers: int | None = None  # None: default_loader_workers()
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    cache_dir: Path | None = None
    cache_budget_gib: float | None = None


def streams(mode: Loading, n: int, preset: Preset, memory_budget_gib: float) -> bool:
    """The rule: stream when asked, or (auto) when the decoded split (uint8 HWC) would pass the memory budget,
    where holding it in RAM stops fitting; memory otherwise, which is faster for a split that fits (no per-epoch
    decoding)."""
    decoded = n * preset.image_size * preset.image_size * preset.channels
    return mode == "stream" or (mode == "auto" and decoded > memory_budget_gib * 2**30)


def load_or_stream(
    data: Dataset, split: str, preset: Preset, classes: tuple[str, ...], per_class: int | None, how: LoadOptions,
) -> Split | StreamSplit:
    """`split` (its per-class subset) decoded into memory or streamed, by `streams`; the decision reads the
    counts alone (an index or a directory listing), never an image."""
    if streams(how.mode, data.count(split, per_class) if how.mode == "auto" else 0, preset, how.memory_budget_gib):
        workers = how.workers if how.workers is not None else default_loader_workers()
        return data.stream(split, preset, how.seed, workers, per_class, how.shuffle_buffer, how.cache_dir)
    budget = int(how.cache_budget_gib * 2**30) if how.cache_budget_gib is not None else None
    return data.load(split, preset, classes, per_class, how.seed, cache_dir=how.cache_dir, cache_budget_bytes=budget)


def default_loader_workers() -> int:
    """One reader per CPU the pod may use, less one for the training loop, at most 8."""
    from headstart import runtime

    return max(1, min(8, runtime.cpu_count() - 1))
