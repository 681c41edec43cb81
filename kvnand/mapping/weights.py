"""Weight placement: page-aligned tensor-parallel tiling of GEMV matrices over dies and planes.

Output columns are split over the dies of the group (each die holds all input rows of its columns, so
the input vector is broadcast to every die of a channel once and no cross-die reduction is needed);
inside a die the tile's pages spread over the planes and the global buffer reduces plane partial sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvnand.hw.flash import FlashGroup
from kvnand.program import ceil


@dataclass(frozen=True)
class GemvTiling:
    in_dim: int
    out_dim: int                 # total output columns (all fused matrices, active experts)
    pages_per_die: int
    pages_per_plane: int         # busiest plane
    weights_per_page: float
    cols_per_die: int

    @property
    def pages_total(self) -> int:
        return self.pages_per_die  # per die; multiply by dies for the group total


def tile_gemv(group: FlashGroup, in_dim: int, out_dim: int, weight_bytes: float) -> GemvTiling:
    cols = ceil(out_dim / group.dies)
    per_die = ceil(in_dim * cols * weight_bytes / group.page_bytes)
    per_plane = ceil(per_die / group.die.geometry.planes)
    return GemvTiling(in_dim, out_dim, per_die, per_plane, group.page_bytes / weight_bytes, cols)


def weight_slices(in_dim: int, out_dim: int, dies: int, planes: int, rows_per_page: int, cols_per_page: int):
    """Explicit slices {(die, plane, page): (row0, row1, col0, col1)} of one matrix (for coverage tests)."""
    out = {}
    cols = math.ceil(out_dim / dies)
    for d in range(dies):
        c0, c1 = d * cols, min(out_dim, (d + 1) * cols)
        i = 0
        for r in range(0, in_dim, rows_per_page):
            for c in range(c0, c1, cols_per_page):
                out[(d, i % planes, i // planes)] = (r, min(in_dim, r + rows_per_page), c, min(c1, c + cols_per_page))
                i += 1
    return out
