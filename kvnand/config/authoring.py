"""The authoring JSON Schema (`kvnand schema`): what a system or device preset FILE may say, for editors.

The pydantic models (config.schema) describe the resolved tree: every part present, every quantity an SI
float. A file is written before resolution, so its schema differs: a system may `extends:` another and state
only what differs, a part may be `{preset: NAME, ...overrides}`, a device file has a `kind`, nothing but
`schema_version` is required (the loader checks the resolved tree), and a quantity is a string with its
unit ("4 us", "16 KiB"; the description says which unit and range). The schema is derived from the
models, so it cannot drift from them.
"""

from __future__ import annotations

import copy
from typing import Any

from kvnand.config import units
from kvnand.config.schema import Channel, Dram, Ecc, FlashDie, IfcLogic, Link, Npu, System

# a number, then a unit expression (what config.units.parse reads); money may be written "$0.72/GB"
QUANTITY_PATTERN = r"^\s*\$?[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*[A-Za-z/$%\u00b5\u03bc(]"
# the `kind:` of a device preset file -> the part it describes
DEVICE_KINDS = {"flash_die": FlashDie, "ecc": Ecc, "ifc_logic": IfcLogic, "channel": Channel, "link": Link,
                "dram": Dram, "npu": Npu}
_PRESET = {"type": "string", "description": "a device preset: the stem of arch_configs/devices/NAME.yaml or a path; "
                                            "the keys beside it override the preset's"}
_EXTENDS = {"type": "string", "description": "a file of the same kind (a preset name or a path) this one states the "
                                             "differences from"}


def _authoring(node: Any) -> Any:
    """A property schema as a file writes it: quantities as unit strings, recursively."""
    if isinstance(node, list):
        return [_authoring(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "x-unit" in node:
        dim = node["x-unit"]
        out = {"type": "string", "pattern": QUANTITY_PATTERN, "x-unit": dim,
               "description": f"{node.get('description', '')} (a quantity with a unit: {units.DIMENSIONS[dim][1]})"}
        if isinstance(node.get("default"), (int, float)):
            out["default"] = units.format_quantity(float(node["default"]), dim)
        return out
    # a default of a whole part is a resolved tree (SI floats): left out; a flag's or a name's stays
    out = {k: _authoring(v) for k, v in node.items()
           if k != "properties" and not (k == "default" and isinstance(v, dict))}
    if "properties" in node:
        out["properties"] = {k: _authoring(v) for k, v in node["properties"].items()}
    return out


def _part(defn: dict) -> dict:
    """A part as a file writes it: any subset of its keys, or a preset plus overrides."""
    out = _authoring(defn)
    out.pop("required", None)
    out["properties"] = {"preset": _PRESET, **out["properties"]}
    return out


def authoring_schema() -> dict:
    """JSON Schema (2020-12) of a system file or a device preset file."""
    resolved = System.model_json_schema()
    defs = {name: _part(d) for name, d in resolved.pop("$defs").items()}
    system = _authoring(resolved)
    system["properties"] = {"schema_version": system["properties"]["schema_version"], "extends": _EXTENDS,
                            **{k: v for k, v in system["properties"].items() if k != "schema_version"}}
    system["required"] = ["schema_version"]
    system["title"] = "kvnand system file"
    defs["SystemFile"] = system
    for kind, model in DEVICE_KINDS.items():
        part = copy.deepcopy(defs[model.__name__])
        part["properties"].pop("preset")
        part["properties"] = {"schema_version": system["properties"]["schema_version"],
                              "kind": {"const": kind, "description": f"a {kind} device preset"},
                              "extends": _EXTENDS, **part["properties"]}
        part["required"] = ["schema_version", "kind"]
        part["title"] = f"kvnand device preset: {kind}"
        defs[f"DeviceFile_{kind}"] = part
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "kvnand system or device preset file (arch_configs/systems, arch_configs/devices)",
            "description": "Quantities are strings with units; a part may be {preset: NAME, ...overrides}; a file "
                           "may extend another and state only what differs. `kvnand show-config` prints a "
                           "resolved system in this form.",
            "anyOf": [{"$ref": "#/$defs/SystemFile"}, *({"$ref": f"#/$defs/DeviceFile_{k}"} for k in DEVICE_KINDS)],
            "$defs": defs}
