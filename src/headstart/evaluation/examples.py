"""Example errors for the evaluation report: which test images to show, and their thumbnails.

Evaluate chooses and writes them, since it has the data; register and a Kubeflow task may not. The
choice is a pure function of the predictions, bounded whatever the split's size, and the thumbnails are
named by their row in predictions.npz: a name from the data never becomes a file name.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

CAP = 120  # thumbnails at most, whatever the number of classes or images
PER_GROUP = 8  # images per group (a model's confident mistakes, a confused pair, a model's negative flips)
PAIRS = 4  # most confused pairs shown per model
SIZE = 64  # thumbnail edge, pixels
QUALITY = 80  # JPEG quality


def choose(y_true: np.ndarray, preds: dict[str, np.ndarray], confs: dict[str, np.ndarray],
           candidates: tuple[str, ...] = ("finetune", "scratch"), reference: str = "champion",
           cap: int = CAP) -> dict[str, list[int]]:
    """Rows to show, by group: `confident/<model>` its most confident mistakes, `flips/<model>` images
    `reference` got right and it gets wrong, `pair/<model>/<t>/<p>` a few images of its most confused pairs
    (class indices). Groups are filled in that order until `cap` rows are taken; a row shows once."""
    y = np.asarray(y_true)
    n = int(max([y.max(initial=0)] + [p.max(initial=0) for p in preds.values()])) + 1
    taken: set[int] = set()
    chosen: dict[str, list[int]] = {}

    def take(name: str, rows: np.ndarray, model: str) -> None:
        """The most confident of `rows` not shown yet, PER_GROUP at most, while the cap allows."""
        keep = [int(r) for r in rows[np.argsort(-confs[model][rows], kind="stable")] if int(r) not in taken]
        keep = keep[: min(PER_GROUP, cap - len(taken))]
        taken.update(keep)
        if keep:
            chosen[name] = keep

    for m in preds:
        take(f"confident/{m}", np.flatnonzero(preds[m] != y), m)
    for m in candidates if reference in preds else ():
        if m in preds:
            take(f"flips/{m}", np.flatnonzero((preds[reference] == y) & (preds[m] != y)), m)
    for m in preds:
        off = np.bincount(y * n + preds[m], minlength=n * n).reshape(n, n)
        np.fill_diagonal(off, 0)
        for flat in np.argsort(-off.ravel(), kind="stable")[:PAIRS]:
            t, p = divmod(int(flat), n)
            if off[t, p]:
                take(f"pair/{m}/{t}/{p}", np.flatnonzero((y == t) & (preds[m] == p)), m)
    return chosen


def write(data_dir: Path, names: list[str], chosen: dict[str, list[int]], dest: Path) -> Path:
    """`dest/<row>.jpg` for every chosen row (`names`: predictions.npz's paths) and `dest/index.json` (the
    groups). A packed split's images are streamed out of its test shards, as the serving check does."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    rows = sorted({r for group in chosen.values() for r in group})
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        for row, path in zip(rows, image_files(data_dir, [names[r] for r in rows], Path(tmp)), strict=True):
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((SIZE, SIZE))
                im.save(dest / f"{row}.jpg", "JPEG", quality=QUALITY)
    (dest / "index.json").write_text(json.dumps(chosen, indent=1) + "\n")
    return dest


def image_files(data_dir: Path, names: list[str], dest: Path) -> list[Path]:
    """The files of test images named as evaluation lists them ('test/<class>/<file>'). An ImageFolder has
    them on disk; a packed dataset only inside its shards, whose bytes are streamed out into `dest`."""
    from headstart.data.dataset import open_dataset
    from headstart.data.names import shown, unsafe_path_reason
    from headstart.errors import DataError

    for name in names:
        if reason := unsafe_path_reason(name):
            raise DataError(f"{data_dir}: the evaluation lists test image {shown(name)!r}, not a plain relative path "
                            f"({reason}); validate the data and re-run evaluate on it")
    return open_dataset(data_dir).image_files(names, dest)
