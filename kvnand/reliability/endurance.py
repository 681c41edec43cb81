"""Endurance: P/E cycles from KV writes, refresh rewrites and a KV policy's garbage collection, against the
cell's P/E budget.

A KV lane erases one block per block-worth of pages it writes (lanes are log-structured, see
disturb.py). Every refresh also erases one block. Where the erases land depends on
`kv.block_randomization`:
- on (default): a lane draws its next block at random from the free blocks of its die group. Erases
  spread evenly over every block of the group (weights move too when refreshed), so the P/E per block
  per year is erases per year / blocks of the group. The capacity that holds the KV sets the write
  budget.
- off: each lane reuses the same physical blocks every session. That is a ring of
  ceil(pages per session / lane block) + 1 blocks, and the busiest lane's ring blocks take its erases
  (writes and KV refreshes). Weight blocks are refreshed in place.
A KV policy that evicts and compacts adds the erases of its garbage collection (kvnand.mapping.gc, at
the session's mean decode context) to the KV group's write erases, spread like them.
The hottest block of any group sets the lifetime: the years until it has used up the cell's rated P/E
cycles. Refresh erases are counted explicitly against the full budget. The paper instead sets half of
the budget aside for them; `refresh_pe_share` shows how much of the wear refresh takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvnand.lowering.step import Lowering
from kvnand.reliability.disturb import Workload
from kvnand.reliability.profile import DAYS_PER_YEAR
from kvnand.reliability.refresh import GroupRefresh


@dataclass(frozen=True)
class GroupWear:
    name: str
    blocks: int
    write_erases_per_day: float     # KV writes, a KV policy's garbage collection included
    refresh_erases_per_day: float
    gc_erases_per_day: float        # the part of write_erases_per_day that garbage collection adds
    pe_cycles_per_year: float       # of the group's hottest block
    pe_budget: int

    @property
    def lifetime_years(self) -> float:
        return self.pe_budget / self.pe_cycles_per_year if self.pe_cycles_per_year > 0 else math.inf


def pe_per_year(erases_per_day: float, blocks: float) -> float:
    """P/E cycles per block per year when `erases_per_day` spread evenly over `blocks` blocks."""
    return erases_per_day * DAYS_PER_YEAR / blocks


def wear(w: Workload, plans: list[GroupRefresh], tokens_per_s: float) -> list[GroupWear]:
    tokens_per_day = tokens_per_s * 3600 * w.profile.hours_per_day
    sessions_per_day = tokens_per_day / w.session.decode_steps
    randomized = w.system.kv.block_randomization
    gc = Lowering(w.system, w.model, w.precision, w.session.mean_decode_context, w.kv_policy).gc()
    out = []
    for g, p in zip(w.groups, plans, strict=True):
        gc_erases = gc.erases_per_token * tokens_per_day if g.kv is not None else 0.0
        writes = float(g.kv.count.sum()) * sessions_per_day + gc_erases if g.kv is not None else 0.0
        refreshes = p.refreshes_per_token * tokens_per_day
        if randomized:
            hottest = pe_per_year(writes + refreshes, g.blocks)
        else:
            hottest = 0.0
            if g.kv is not None:
                lane = g.kv_lanes
                ring = math.ceil(lane.blocks_per_session) + 1
                gc_per_session = gc_erases / sessions_per_day if gc_erases else 0.0
                per_session = lane.blocks_per_session + (p.kv_refreshes_per_session + gc_per_session) / lane.lanes
                hottest = pe_per_year(per_session * sessions_per_day, ring)
            if g.weights is not None:
                hottest = max(hottest, pe_per_year(g.weights.max() / p.threshold * tokens_per_day, 1))
        out.append(GroupWear(g.group.name, g.blocks, writes, refreshes, gc_erases, hottest,
                             g.group.die.cell.pe_cycles))
    return out
