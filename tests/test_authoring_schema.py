"""`kvnand schema` publishes the AUTHORING schema, and every shipped system and device file validates against
it. The `jsonschema` package is not a dependency, so the check below implements exactly the JSON Schema
keywords the schema uses (and fails on any other, so it cannot pass by ignoring one)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvnand.config.authoring import DEVICE_KINDS, authoring_schema
from kvnand.config.loader import read_yaml
from kvnand.paths import CONFIG_ROOT

KVNAND = Path(sys.executable).parent / "kvnand"
ANNOTATIONS = {"$schema", "$defs", "title", "description", "default", "x-unit"}
CHECKED = {"$ref", "anyOf", "type", "enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum",
           "exclusiveMaximum", "properties", "additionalProperties", "required", "propertyNames", "minProperties"}
TYPES = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
         "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
         "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
         "object": lambda v: isinstance(v, dict), "null": lambda v: v is None, "array": lambda v: isinstance(v, list)}


def errors(schema: dict, value, root: dict, path: str = "") -> list[str]:
    """Every violation of `schema` by `value` ('path: problem')."""
    unknown = set(schema) - ANNOTATIONS - CHECKED
    assert not unknown, f"the schema uses keywords this check does not implement: {unknown}"
    out: list[str] = []
    if "$ref" in schema:
        out += errors(root["$defs"][schema["$ref"].removeprefix("#/$defs/")], value, root, path)
    if "anyOf" in schema:
        branches = [errors(s, value, root, path) for s in schema["anyOf"]]
        if all(branches):
            out.append(f"{path}: matches none of anyOf ({'; '.join(e for b in branches for e in b)})")
    if "type" in schema and not TYPES[schema["type"]](value):
        return out + [f"{path}: not {schema['type']} ({value!r})"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        out.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        out.append(f"{path}: {value!r} does not match {schema['pattern']}")
    for key, ok in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
                    ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b)):
        if key in schema and TYPES["number"](value) and not ok(value, schema[key]):
            out.append(f"{path}: {value!r} fails {key} {schema[key]}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                out += errors(props[k], v, root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unknown key {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], v, root, f"{path}.{k}")
            if "propertyNames" in schema:
                out += errors(schema["propertyNames"], k, root, f"{path}.{k} (name)")
        out += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        if len(value) < schema.get("minProperties", 0):
            out.append(f"{path}: fewer than {schema['minProperties']} keys")
    return out


@pytest.fixture(scope="module")
def schema():
    return authoring_schema()


def test_kvnand_schema_prints_the_authoring_schema(schema):
    out = subprocess.run([str(KVNAND), "schema"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads(json.dumps(schema))


SHIPPED = sorted((CONFIG_ROOT / "systems").glob("*.yaml")) + sorted((CONFIG_ROOT / "devices").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_every_shipped_file_validates(schema, path):
    data, _ = read_yaml(path)
    assert errors(schema, data, schema) == []


def test_what_the_schema_says(schema):
    defs = schema["$defs"]
    system = defs["SystemFile"]
    assert system["required"] == ["schema_version"] and "extends" in system["properties"]
    assert "preset" in defs["FlashDie"]["properties"] and "required" not in defs["FlashDie"]
    tr = defs["CellMode"]["properties"]["tR"]
    assert tr["type"] == "string" and tr["x-unit"] == "time" and "'4 us'" in tr["description"]
    assert defs["Geometry"]["properties"]["spare_size"]["default"] == "0 B"
    assert set(DEVICE_KINDS) == {read_yaml(p)[0]["kind"] for p in (CONFIG_ROOT / "devices").glob("*.yaml")}


@pytest.mark.parametrize(("text", "problem"), [
    ("schema_version: 1\nextends: base2\nname: x\nnpu: {preset: npu-kvnand, static_power: 5}\n", "not string"),
    ("schema_version: 1\nextends: base2\nflash: {channles: 4}\n", "unknown key 'channles'"),
    ("schema_version: 1\nkind: link\nrate: fast\n", "does not match"),
    ("extends: base2\nname: x\n", "missing 'schema_version'"),
])
def test_a_bad_file_fails_against_the_schema(schema, tmp_path, text, problem):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    data, _ = read_yaml(f)
    found = errors(schema, data, schema)
    assert found and any(problem in e for e in found), found
