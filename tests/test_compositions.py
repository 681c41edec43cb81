"""Lowering compositions: every placement the schema accepts either evaluates or is refused with one InputError.

Each (placement.weights x kv.store x placement.attention) allowed by kvnand/config/schema.py is set with --set
overrides on every shipped preset and evaluated in both engines. The contract: a finite record (or an OOM
record that says why), else kvnand's own InputError with a one-line message (the registries' composition
check names what the placement needs); never a raw KeyError, AttributeError or ZeroDivisionError from deep
inside the lowering or the energy tables. The schema's allowed values are the registries' names.
"""

from __future__ import annotations

import itertools
import math
from typing import get_args

import pytest

import kvnand
from kvnand.config.loader import system_names
from kvnand.config.schema import KvPlacement, Placement
from kvnand.errors import InputError

WEIGHTS = get_args(Placement.model_fields["weights"].annotation)
STORES = get_args(KvPlacement.model_fields["store"].annotation)
ATTENTION = get_args(Placement.model_fields["attention"].annotation)
MODEL, CONTEXT = "llama3.1-8b", 1000  # fits every store of every preset, so no crash hides behind an OOM
G2_DIES = 4  # a flash_group needs a G1/G2 split; 4 dies is a valid one on every shipped flash array


def _overrides(w: str, s: str, a: str) -> dict:
    return {"placement.weights": w, "kv.store": s, "placement.attention": a, **({"g2_dies": G2_DIES}
                                                                                 if s == "flash_group" else {})}


def _params():
    for preset in system_names():
        for w, s, a in itertools.product(WEIGHTS, STORES, ATTENTION):
            yield pytest.param(preset, _overrides(w, s, a), id=f"{preset}/{w}/{s}/{a}")


def test_the_schema_offers_exactly_what_the_registries_lower():
    from kvnand.lowering.attention import ATTENTION_SITES
    from kvnand.lowering.kv_homes import KV_HOMES
    from kvnand.lowering.weights import WEIGHT_HOMES

    assert set(WEIGHTS) == set(WEIGHT_HOMES.names())
    assert set(STORES) == set(KV_HOMES.names())
    assert set(ATTENTION) == set(ATTENTION_SITES.names())


def test_every_shipped_preset_lowers_its_own_composition():
    for preset in system_names():
        r = kvnand.evaluate(preset, MODEL, CONTEXT)
        assert not r["oom"] and math.isfinite(r["latency_s"]), preset


@pytest.mark.parametrize(("preset", "overrides"), list(_params()))
def test_composition_evaluates_or_raises_input_error(preset, overrides):
    """A finite record in both engines, an OOM record with its reason, or one clear InputError."""
    for mode in ("fast", "event"):
        try:
            r = kvnand.evaluate(preset, MODEL, CONTEXT, mode=mode, overrides=overrides)
        except InputError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message
            return
        if r["oom"]:
            assert r["oom_reason"] and r["tokens_per_s"] is None
            continue
        for key in ("latency_s", "tokens_per_s", "energy_j_per_token", "ttft_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (mode, key, r[key])
        for key in ("breakdown_s", "breakdown_by_resource_s", "busy_s", "energy_breakdown_j", "actions"):
            assert all(math.isfinite(v) and v >= 0 for v in r[key].values()), (mode, key, r[key])
        assert sum(r["breakdown_s"].values()) == pytest.approx(r["latency_s"], rel=1e-6), mode
