"""Validation's near-duplicate index: a k-d tree over the thumbnails' block means must answer a radius
query exactly as a k-d tree over all 64 cells does (same neighbours, same distances), only faster."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from headstart.validation.leakage import BLOCKS, NEIGHBOURS, ThumbIndex


def test_the_block_means_never_lengthen_a_distance() -> None:
    assert np.allclose(BLOCKS.T @ BLOCKS, np.eye(16))  # orthonormal columns: a projection, a contraction
    a, b = np.random.default_rng(0).random((2, 1000, 64))
    assert (np.linalg.norm((a - b) @ BLOCKS, axis=1) <= np.linalg.norm(a - b, axis=1) + 1e-12).all()


@pytest.mark.parametrize("max_rms", [0.01, 0.05])
def test_it_finds_what_a_tree_over_the_64_cells_finds(max_rms: float) -> None:
    rng = np.random.default_rng(1)
    smooth = rng.integers(60, 200, (4000, 4, 4)).repeat(2, axis=1).repeat(2, axis=2).reshape(4000, 64)
    ref = np.clip(smooth + rng.integers(-8, 9, (4000, 64)), 0, 255)  # alike, as real ones are
    ref[3000:] = np.clip(ref[:1000] + rng.integers(-1, 2, (1000, 64)), 0, 255)  # near pairs: several neighbours
    ref = ref.astype(np.uint8)
    copies = np.clip(ref[rng.choice(4000, 500, replace=False)].astype(int) + rng.integers(-2, 3, (500, 64)), 0, 255)
    query = np.vstack([copies, rng.integers(0, 256, (500, 64))]).astype(np.uint8).astype(np.float32) / 255.0
    radius = max_rms * 8 * (1 + 1e-9) + 1e-12

    want_d, want_i = cKDTree((ref.astype(np.float32) / 255.0).astype(np.float64)).query(
        query, k=NEIGHBOURS, distance_upper_bound=radius)
    got_d, got_i = ThumbIndex(ref).query(query, k=NEIGHBOURS, distance_upper_bound=radius)

    found = np.isfinite(want_d)
    assert found[:500, 0].all() and found[:, 1].any()  # every planted copy; some queries have two neighbours
    assert (np.isfinite(got_d) == found).all()
    assert (got_i[found] == want_i[found]).all() and np.allclose(got_d[found], want_d[found], rtol=0, atol=1e-12)
    assert (got_i[~found] == len(ref)).all()  # cKDTree's "no neighbour" marks
