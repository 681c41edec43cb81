"""arch_configs/systems/cxl-kv.yaml: a KV cache in plain NAND behind a CXL link, composed in YAML only (a link
part plus kv.store nand), evaluated end to end: the link carries the KV reads and writes, shows in the
breakdown by resource and the energy, and the NAND behind it bounds the context."""

from __future__ import annotations

import math

import pytest

import kvnand
from kvnand.config.loader import load_system
from kvnand.errors import InputError


@pytest.mark.parametrize("mode", ["fast", "event"])
def test_cxl_kv_runs_through_its_link(mode):
    r = kvnand.evaluate("cxl-kv", "llama3.1-8b", 100_000, mode=mode)
    assert not r["oom"] and math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0
    link = {k: v for k, v in r["breakdown_by_resource_s"].items() if "link" in k}
    assert link and sum(link.values()) > 0
    # every KV page read crosses the link once, and each token's new K/V cross it into the device
    assert r["actions"]["link.bits"] >= r["actions"]["nand.sense_bits"] > 0
    assert r["energy_breakdown_j"]


def test_the_link_sets_the_pace_of_long_contexts():
    """Same dies and NPU as Base-2; behind a 31.5 GB/s link instead of 8 x 4.8 GB/s of die I/O, the KV readout
    is slower at 100K, and a faster link narrows the gap."""
    slow = kvnand.evaluate("cxl-kv", "llama3.1-8b", 100_000)
    base2 = kvnand.evaluate("base2", "llama3.1-8b", 100_000)
    fast = kvnand.evaluate("cxl-kv", "llama3.1-8b", 100_000, overrides={"link.rate": "126 GB/s"})
    assert slow["latency_s"] > base2["latency_s"]
    assert fast["latency_s"] < slow["latency_s"]
    assert "link" in slow["bottleneck"]


def test_capacity_is_the_nand_behind_the_link():
    s = load_system("cxl-kv")
    r = kvnand.evaluate("cxl-kv", "llama3.1-8b", 1000)
    (kv_store,) = [k for k in r["capacity"] if "cxl2x8" in k]
    assert r["capacity"][kv_store]["capacity_bytes"] == s.nand.dies * s.nand.die.geometry.die_bytes
    kv_per_token = r["capacity"][kv_store]["used_bytes"] / 1000
    beyond = int(r["capacity"][kv_store]["capacity_bytes"] / kv_per_token) + 1000
    assert r["max_context"] < beyond
    assert kvnand.evaluate("cxl-kv", "llama3.1-8b", beyond)["oom"]


def test_a_link_nothing_crosses_is_refused(tmp_path):
    f = tmp_path / "c16-link.yaml"
    f.write_text("schema_version: 1\nextends: kvnand-c16\nname: c16-link\nlink: {preset: cxl2x8}\n")
    with pytest.raises(InputError, match="kv.store 'colocated' does not use one") as exc:
        load_system(str(f))
    assert exc.value.key == "link" and "c16-link.yaml" in str(exc.value)
