"""Small things users expect: `kvnand --version`, help(kvnand.evaluate), memory cost in every record."""

from __future__ import annotations

import inspect
import pydoc

import kvnand


def test_version(kvnand_cli):
    code, out, _ = kvnand_cli("--version")
    assert code == 0 and out.strip() == f"kvnand {kvnand.__version__}"


def test_help_of_evaluate_shows_the_real_signature():
    params = inspect.signature(kvnand.evaluate).parameters
    assert list(params)[:3] == ["system", "model", "context"] and "precision" in params
    text = pydoc.render_doc(kvnand.evaluate, renderer=pydoc.plaintext)
    assert "context: 'int'" in text and "*args" not in text


def test_every_record_has_memory_cost_and_capacity():
    for r in (kvnand.evaluate("kvnand-c16", "llama2-7b", 1000),
              kvnand.evaluate("base1", "llama3.1-70b", 100_000)):  # the second is out of memory
        assert r["cost_usd"] > 0
        assert r["cost_usd"] == sum(m["cost_usd"] for m in r["memories"])
        assert all(m["capacity_bytes"] > 0 for m in r["memories"])
    assert r["oom"] and {m["memory"] for m in r["memories"]} == {"IFC flash", "DRAM"}
