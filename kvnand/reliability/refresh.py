"""Refresh/reclaim: when blocks are rewritten to reset read disturb, and what that costs per token.

The policy comes from `refresh.*` keys in the overrides:
- `refresh.trigger=reads` (default): rewrite a block when its read count reaches `refresh.read_fraction`
  (default 1) times the cell's read-disturb limit. That is the paper's 10^6 for KVNAND's SLC, a
  Lincoln-style read reclaim.
- `refresh.trigger=rber`: rewrite when the predicted RBER reaches the RBER at which UBER would exceed
  `refresh.uber_target`, assuming rated end-of-life P/E and data `refresh.retention_years` old. The
  read count then comes from the error model instead of the data sheet.

A refresh reads every valid page of the block, decodes and re-encodes it and programs it into a fresh
block (an on-die copy, or through the controller when the ECC lives there); then it erases the old
block. Each weight block is refreshed every `threshold` reads (a fraction per token). A KV block is
refreshed floor(reads / threshold) times between its erases. We assume the work is spread between steps
over the group's planes, so seconds_per_token is the plane time it steals divided by the planes. It is
priced with the system's energy table (erase energy from the die YAML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from kvnand.energy.tables import price
from kvnand.errors import InputError
from kvnand.lowering.step import energy_prefix
from kvnand.reliability import ecc as ecc_model
from kvnand.reliability.disturb import GroupStress, Workload, workload
from kvnand.reliability.profile import Profile, prefixed

TRIGGERS = ("reads", "rber")


@dataclass(frozen=True)
class RefreshPolicy:
    trigger: str = "reads"
    read_fraction: float = 1.0
    uber_target: float = 1e-15
    retention_years: float = 1.0


def get_policy(overrides: dict | None = None) -> RefreshPolicy:
    """The default policy with the `refresh.*` keys of `overrides` applied."""
    changes = {}
    names = [f.name for f in fields(RefreshPolicy)]
    for name, (key, value) in prefixed(overrides, "refresh", names, "refresh setting").items():
        if name == "trigger":
            if value not in TRIGGERS:
                raise InputError("unknown refresh trigger", key=key, value=value, allowed=", ".join(TRIGGERS))
            changes[name] = value
            continue
        lo, hi, allowed = _RANGES[name]
        try:
            x = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError, OverflowError):
            x = math.nan
        if not lo < x <= hi:  # also refuses nan and inf
            raise InputError("out of range" if math.isfinite(x) else "not a finite number", key=key, value=value,
                             allowed=allowed)
        changes[name] = x
    return replace(RefreshPolicy(), **changes)


# setting -> (exclusive low, inclusive high, what is allowed)
_RANGES = {
    "read_fraction": (0.0, 1e12, "a fraction > 0 and <= 1e12 of the read-disturb limit (large: no refresh)"),
    "uber_target": (0.0, 1e-3, "a probability > 0 and <= 1e-3 (e.g. 1e-15)"),
    "retention_years": (0.0, 100.0, "years > 0 and <= 100"),
}


def read_threshold(policy: RefreshPolicy, g: GroupStress) -> float:
    """Reads at which a block of this group is rewritten."""
    cell = g.group.die.cell
    if policy.trigger == "reads":
        return policy.read_fraction * cell.read_disturb_limit
    # rated end of life and the stated data age; what is left of the RBER budget is for read disturb
    rest = ecc_model.rber_limit(g.group.array.ecc, policy.uber_target) - ecc_model.rber(
        cell, cell.pe_cycles, 0.0, policy.retention_years * ecc_model.SECONDS_PER_YEAR)
    if rest <= 0:
        raise InputError(f"the cell reaches the RBER for this UBER target without any reads "
                         f"({g.group.name} dies at rated P/E and {policy.retention_years:g} years)",
                         key="refresh.uber_target", value=policy.uber_target)
    return rest / cell.rber_read_coeff * cell.read_disturb_limit if cell.rber_read_coeff else math.inf


@dataclass(frozen=True)
class GroupRefresh:
    """Refresh work of one die group, per decode token (KV refreshes also per session, for endurance)."""

    name: str
    threshold: float
    refreshes_per_token: float
    pages_per_token: float
    kv_refreshes_per_session: float
    seconds_per_token: float
    joules_per_token: float


def plan(w: Workload, policy: RefreshPolicy) -> list[GroupRefresh]:
    return [_group_plan(w, g, read_threshold(policy, g)) for g in w.groups]


def _group_plan(w: Workload, g: GroupStress, threshold: float) -> GroupRefresh:
    steps = w.session.decode_steps
    kv_refreshes = kv_pages = 0.0
    if g.kv is not None:
        n = np.floor(g.kv.reads / threshold) * g.kv.count  # per session
        kv_refreshes, kv_pages = float(n.sum()), float((n * g.kv.pages).sum())
    refreshes, pages = kv_refreshes / steps, kv_pages / steps
    if g.weights is not None:
        n = g.weights.reads / threshold * g.weights.count  # per token
        refreshes += float(n.sum())
        pages += float((n * g.weights.pages).sum())
    seconds, joules = _cost(w, g, pages, refreshes)
    return GroupRefresh(g.group.name, threshold, refreshes, pages, kv_refreshes, seconds, joules)


def _cost(w: Workload, g: GroupStress, pages: float, erases: float) -> tuple[float, float]:
    """(plane seconds spread over the group's planes, joules) of copying `pages` pages and erasing `erases`
    blocks."""
    part = energy_prefix(g.group)
    seconds, counts = g.group.copy_back(pages, erases, part, f"{part}.sense_bits")
    return seconds, price(counts, w.system, 0.0)[0]


def refresh_overhead(system: str, model: str, context: int, precision: str | None = None,
                     overrides: dict | None = None, profile: str | Profile = "continuous",
                     tokens_per_s: float | None = None) -> dict:
    """Refresh cost of one point per decode token, for evaluate(): seconds, joules, programs, and refreshes
    per day. Per-token figures need no decode rate; refreshes_per_day uses the profile's tokens_per_s, else
    `tokens_per_s`."""
    w = workload(system, model, context, precision=precision, overrides=overrides, profile=profile,
                 tokens_per_s=tokens_per_s)
    if w.fit.oom:
        return {"oom": True, "seconds_per_token": None, "joules_per_token": None, "programs_per_token": None,
                "erases_per_token": None, "refreshes_per_day": None}
    plans = plan(w, get_policy(overrides))
    return {"oom": False, **summary(plans, w.tokens_per_s() * 3600 * w.profile.hours_per_day)}


def summary(plans: list[GroupRefresh], tokens_per_day: float) -> dict:
    """All groups' refresh work: per decode token, and refreshes per day."""
    per_token = sum(p.refreshes_per_token for p in plans)
    return {"seconds_per_token": sum(p.seconds_per_token for p in plans),
            "joules_per_token": sum(p.joules_per_token for p in plans),
            "programs_per_token": sum(p.pages_per_token for p in plans),
            "erases_per_token": per_token,
            "refreshes_per_day": per_token * tokens_per_day}
