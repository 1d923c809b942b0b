"""The one list of image file suffixes: what training reads is exactly what validation accepts.

It is torchvision's ImageFolder list (no .gif: GIFs are palette or animated images, which the
mode check refuses anyway). Torch-free, so validation can import it without loading torch.
"""

from __future__ import annotations

import os

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)


def is_image(name: str) -> bool:
    """Whether a file name has an image suffix (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
