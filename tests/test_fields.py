"""The documented result record (kvnand.present.fields, `kvnand fields`) matches what evaluate() returns:
this fails when a field is added, renamed or dropped on either side."""

from __future__ import annotations

import json

import kvnand
from kvnand.present.fields import FIELDS, paths

POINTS = [  # every kind of record: fits, out of memory, :auto, event mode, refresh, DRAM, CSD, split GEMV, policy,
    # per-sequence contexts
    ("kvnand-d:auto", "llama3.1-8b", 10_000, {"refresh": "continuous"}),
    ("kvnand-c16", "llama2-7b", 1000, {"mode": "event"}),
    ("base1", "llama3.1-70b", 100_000, {}),
    ("base2", "llama2-7b", 1000, {}),
    ("cambricon-llm-l", "llama2-7b", 1000, {}),
    ("csd-offload", "llama2-7b", 1000, {}),
    ("kvnand-c16", "llama3.1-8b", 1000, {"batch": 2, "spec_draft": "llama3.2-1b", "spec_k": 3,
                                         "spec_accept": 0.7}),
    ("kvnand-d", "llama3.1-8b", 10_000, {"batch": 3, "batch_contexts": [1000, 10_000, 1000]}),
    ("kvnand-d", "llama2-7b", 10_000, {"kv_policy": "quest", "overrides": {"kv_policy.budget": 5000}}),
]


def test_documented_fields_are_exactly_the_record_fields():
    seen = set()
    for system, model, context, kw in POINTS:
        seen |= paths(kvnand.evaluate(system, model, context, **kw))
    assert sorted(seen - set(FIELDS)) == [], "fields missing from kvnand/present/fields.py"
    assert sorted(set(FIELDS) - seen) == [], "documented fields no record has"
    assert all(meaning for _, meaning in FIELDS.values())


def test_fields_command(kvnand_cli):
    code, out, _ = kvnand_cli("fields", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert [f["field"] for f in doc["fields"]] == list(FIELDS)
    code, out, _ = kvnand_cli("fields")
    assert code == 0 and "tokens_per_s" in out and "cost_usd" in out
