"""Every field of the system schema changes some output (evaluate, memory cost, reliability, the DSE's
logic-area metric) when changed from a shipped preset's value, so no field is a number a designer can
change and see nothing happen (issue 13). Fields whose effect is elsewhere are listed with where."""

from __future__ import annotations

import json
import typing
from functools import cache

import pytest
from pydantic import BaseModel

import kvnand
from kvnand.config import units
from kvnand.config.loader import load_system
from kvnand.config.schema import System
from kvnand.errors import InputError

SYSTEMS = ("kvnand-c16", "kvnand-d", "base1", "base2", "cambricon-llm-s", "csd-offload", "cxl-kv", "lincoln")
POINTS = (("llama3.1-8b", 1000), ("llama3.1-8b", 100_000), ("opt-30b", 10_000))
# a batched and a speculative step (fields such as placement.draft act only there)
DECODES = ({"batch": 4}, {"spec_draft": "llama3.2-1b", "spec_k": 4, "spec_accept": 0.7})
TEXT = {"source", "note", "name", "description", "schema_version"}  # words, not numbers
# Fields whose effect is not an output of one point; the test named checks it.
ELSEWHERE = {
    "KvPlacement.store": "the KV home: tests/test_compositions.py lowers every combination the registries accept",
    "Placement.weights": "the weights home: tests/test_compositions.py",
    "Placement.attention": "the attention site: tests/test_compositions.py",
    "Geometry.capacity": "an optional cross-check of the geometry's product: tests/test_config.py",
    "Geometry.spare_size": "must hold the ECC parity of the page's codewords (refused otherwise) and scales with "
                           "the page_size short key: tests/test_config.py",
    "CellMode.mode": "checked against the cell's numbers: tests/test_config.py",
}
ZERO_TO = {"time": "1 us", "bytes": "1 MiB", "bandwidth": "1 GB/s", "energy": "1 nJ", "energy_per_bit": "1 pJ/bit",
           "frequency": "1 GHz", "power": "1 W", "area": "1 mm^2", "ops_rate": "1e9 / s", "money_per_byte": "1 USD/GiB"}
ECHOES = {"config", "read_disturb_limit", "block_randomization", "kv_mapping.nop"}  # inputs repeated in a record


def _drop_echoes(rec: dict) -> dict:
    rec = {k: v for k, v in rec.items() if k not in ECHOES and not k.startswith("_")}
    if isinstance(rec.get("kv_mapping"), dict):
        rec["kv_mapping"] = {k: v for k, v in rec["kv_mapping"].items() if f"kv_mapping.{k}" not in ECHOES}
    return rec


@cache
def _outputs(system: str, overrides: tuple) -> str:
    from kvnand import cost
    from kvnand.reliability import reliability
    from kvnand.study.dse.objectives import _hardware

    ov = dict(overrides)
    out = [_drop_echoes(kvnand.evaluate(system, m, c, overrides=ov)) for m, c in POINTS]
    out += [_drop_echoes(kvnand.evaluate(system, "llama3.1-8b", 1000, overrides=ov, **d)) for d in DECODES]
    out.append(cost.memory_cost(system, ov))
    out.append(_hardware(system, overrides))
    out.append(_drop_echoes(reliability(system, "llama3.1-8b", 10_000, overrides=ov, tokens_per_s=10.0)))
    return json.dumps(out, sort_keys=True, default=str)


def _dimension(meta) -> str | None:
    return next((m.name for m in meta if isinstance(m, units.Dimension)), None)


def _leaves(model: BaseModel, prefix: str = ""):
    """(schema field 'Model.field', dotted path, value, dimension or None, annotation) of every leaf of a
    resolved system."""
    for name, field in type(model).model_fields.items():
        value, path = getattr(model, name), f"{prefix}.{name}" if prefix else name
        if name in TEXT or value is None:
            continue
        key = f"{type(model).__name__}.{name}"
        if isinstance(value, BaseModel):
            yield from _leaves(value, path)
        elif isinstance(value, dict):
            vann = typing.get_args(field.annotation)[1]
            for k, v in value.items():
                yield f"{key}.{k}", f"{path}.{k}", v, _dimension(getattr(vann, "__metadata__", ())), vann
        else:
            yield key, path, value, _dimension(field.metadata), field.annotation


def _changes(value, dimension, annotation) -> list:
    if isinstance(value, bool):
        return [not value]
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if a != value]
    if dimension is not None:
        if value == 0:
            return [ZERO_TO[dimension]]
        return [units.format_quantity(value * f, dimension) for f in (2, 0.5, 100, 0.01)]
    if isinstance(value, int):
        return [value * 2, max(1, value // 2), value + 1] if value else [1]
    if isinstance(value, float):
        return [value * 2, value / 2] if value else [0.5]
    return []


def _fields() -> dict[str, list[tuple[str, str, object, str | None, object]]]:
    """Each schema field ('Ecc.decode_rate') with every (system, path, value) of the shipped systems that have it:
    a field of a part used twice (flash.ecc and nand.ecc) counts once."""
    out: dict[str, list] = {}
    for system in SYSTEMS:
        for key, path, value, dim, ann in _leaves(load_system(system)):
            out.setdefault(key, []).append((system, path, value, dim, ann))
    return out


FIELDS = _fields()


def test_every_schema_part_is_covered():
    """Every part of the schema appears in some shipped system (or none of its fields would be tested)."""
    parts = {path.split(".")[0] for uses in FIELDS.values() for _, path, *_ in uses}
    assert set(System.model_fields) - TEXT <= parts | {"soc_static_power"}


@pytest.mark.slow
@pytest.mark.parametrize("field", sorted(set(FIELDS) - set(ELSEWHERE)))
def test_field_changes_an_output(field):
    """Some output of some system moves when the field moves from that system's value."""
    tried = []
    for system, path, value, dim, ann in FIELDS[field]:
        base = _outputs(system, ())
        for new in _changes(value, dim, ann):
            try:
                if _outputs(system, ((path, new),)) != base:
                    return
                tried.append(f"{system} {path}={new}")
            except InputError as exc:
                tried.append(f"{system} {path}={new} refused ({exc.detail[:50]})")
    pytest.fail(f"{field}: no output changed for {tried}")
