"""The one list of image file suffixes: what training reads is exactly what validation accepts.

It is torchvision's ImageFolder list (no .gif: GIFs are palette or animated images, which the
mode check refuses anyway). Torch-free, so validation can import it without loading torch.
"""

from __future__ import annotations

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)
