"""One sample as the stream engine reads it, whichever form it came from (a tar shard or a file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    key: str  # 9-digit position in the split: the packed index's order, or an ImageFolder's load order
    name: str  # the original path inside the split, e.g. "coat/img_00042.png"
    label: int
    data: bytes
    ext: str
    shard: str  # where it was read from, for messages: the shard's file, or the image file
