"""The `kvnand` command's basic interfaces (DESIGN.md): models, show-config, schema, --help, graph.

All invocations run once, concurrently, as real subprocesses of the installed `kvnand` script (exit codes and
stderr exactly as a user sees them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import yaml

KVNAND = Path(sys.executable).parent / "kvnand"
MODEL_KEYS = {"name", "family", "params", "active_params", "layers", "heads", "kv_heads", "head_dim", "weight_bytes",
              "kv_bytes_per_token", "attention", "kv_bytes_per_token_layer", "windows", "max_context"}
ZOO = {"llama2-7b", "llama2-13b", "llama2-70b", "llama3.1-8b", "llama3.1-70b", "opt-6.7b", "opt-13b", "opt-30b",
       "opt-66b", "mixtral-8x7b", "qwen2.5-7b", "qwen3-8b", "qwen3-30b-a3b", "gemma2-9b", "phi3-mini-4k",
       "deepseek-v2-lite", "llama3.2-1b", "mistral-7b-v0.1", "opt-1.3b"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    commands = {
        "help": ["--help"],
        "models": ["models"],
        "models_json": ["models", "--format", "json"],
        "models_unknown": ["models", "no-such-model"],
        "show_g2": ["show-config", "kvnand-d", "--set", "g2_dies=3"],
        "show_missing_arg": ["show-config"],
        "schema": ["schema"],
        "graph": ["graph", "llama3.1-8b"],
        "graphml": ["graph", "llama3.1-8b", "--output", str(tmp / "x.graphml")],
        "graphml_bad_dir": ["graph", "llama3.1-8b", "--output", str(tmp / "no" / "such" / "dir" / "x.graphml")],
    }
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    procs = {k: subprocess.Popen([str(KVNAND), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env, cwd=tmp) for k, args in commands.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=180)
        out[k] = subprocess.CompletedProcess(commands[k], p.returncode, stdout, stderr)
    out["tmp"] = tmp
    return out


def ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def test_help_lists_the_commands(runs):
    out = ok(runs["help"])
    for cmd in ("models", "show-config", "schema", "graph"):
        assert cmd in out


def test_models_table(runs):
    out = ok(runs["models"])
    for name in ZOO:
        assert name in out
    assert "KV/token" in out


def test_models_json_schema_and_exact_keys(runs):
    doc = json.loads(ok(runs["models_json"]))
    assert doc["schema"] == "kvnand.models/1"
    assert set(doc) == {"schema", "models"}
    assert {m["name"] for m in doc["models"]} == ZOO
    for m in doc["models"]:
        assert set(m) == MODEL_KEYS
        assert m["params"] >= m["active_params"] > 0 and m["kv_bytes_per_token"] > 0


def test_unknown_model_is_exit_2_without_traceback(runs):
    r = runs["models_unknown"]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("kvnand: error: ") and "no-such-model" in r.stderr


def test_show_config_set_g2_dies(runs):
    cfg = yaml.safe_load(ok(runs["show_g2"]))
    assert cfg["kv"]["g2_dies"] == 3
    assert cfg["name"] == "kvnand-d" and cfg["flash"]["channels"] * cfg["flash"]["dies_per_channel"] == 16


def test_show_config_usage_error_is_exit_2(runs):
    r = runs["show_missing_arg"]
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Missing argument" in r.stderr


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_schema_is_json_schema(runs):
    """The authoring schema (tests/test_authoring_schema.py validates the shipped files against it)."""
    schema = json.loads(ok(runs["schema"]))
    system = schema["$defs"]["SystemFile"]
    assert system["type"] == "object" and system["additionalProperties"] is False
    assert {"schema_version", "extends", "flash", "kv", "npu", "placement"} <= set(system["properties"])
    assert system["required"] == ["schema_version"]  # a file that extends another states only what differs
    defs = schema["$defs"]
    for ref in _refs(schema):  # every reference resolves
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs
    types = {"object", "string", "number", "integer", "boolean", "null", "array"}
    for d in defs.values():
        assert d.get("type", "object") in types
        assert d.get("additionalProperties") is False  # extra="forbid" everywhere
    assert defs["CellMode"]["properties"]["mode"]["enum"] == ["SLC", "MLC", "TLC", "QLC"]


def test_graph_table(runs):
    out = ok(runs["graph"])
    assert "llama3.1-8b" in out and "operator" in out and "MFLOP" in out
    assert "decode step:" in out and "GFLOP" in out


def test_graph_graphml_is_readable(runs):
    ok(runs["graphml"])
    g = nx.read_graphml(runs["tmp"] / "x.graphml")
    assert g.number_of_nodes() > 5 and g.number_of_edges() > 0
    assert nx.is_directed_acyclic_graph(g)
    assert not list(runs["tmp"].glob("*.tmp"))  # no half-written temporaries left behind


def test_graph_bad_output_directory_is_exit_2_without_traceback(runs):
    r = runs["graphml_bad_dir"]
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2 and r.stderr.startswith("kvnand: error: ")
