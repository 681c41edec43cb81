"""A resolved system written back as a system file: `kvnand show-config`.

Quantities are printed with units (config.units.format_quantity: the shortest text that reads back to the
same float), so the output loads again and prints the same. Comment lines mark the values that do not come
from the part's own file, because a part's `source` describes that file only: `inherited` (from a system
it extends, or a device preset extending another), `set here over preset` (a key beside `preset:`),
`overridden` (--set) and `calibrated` (arch_configs/calibration.yaml). Comments sit on their own lines, so
the data are the same with or without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from kvnand.config import units
from kvnand.config.loader import PRESET_MARK, Source, load_calibration
from kvnand.paths import CONFIG_ROOT


def _dimension(metadata) -> str | None:
    return next((m.name for m in metadata if isinstance(m, units.Dimension)), None)


def plain(model: BaseModel) -> dict[str, Any]:
    """The model as YAML-ready data in the schema's field order; quantities as unit strings, None left out."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        dim = _dimension(field.metadata)
        if isinstance(value, BaseModel):
            value = plain(value)
        elif isinstance(value, dict):  # a mapping of quantities (npu.peak_ops)
            args = get_args(field.annotation)
            vdim = _dimension(getattr(args[1], "__metadata__", ())) if len(args) == 2 else None
            value = {k: units.format_quantity(v, vdim) if vdim else v for k, v in value.items()}
        elif dim is not None:
            value = units.format_quantity(value, dim)
        out[name] = value
    return out


def _shown_path(file: str) -> str:
    try:
        return str(Path(file).resolve().relative_to(CONFIG_ROOT.resolve()))
    except ValueError:
        return file


class _Provenance:
    """The comment (if any) above a key: where its value came from when that is not the part's own file."""

    def __init__(self, src: Source):
        self.src, self.top = src, src.default_file
        self.cal_file = str(CONFIG_ROOT / "calibration.yaml")
        self.constants = {c.path: name for name, c in load_calibration().constants.items()}

    def file(self, path: str) -> str:
        """The file a part's keys come from by default: its preset's when it has one, else where it is."""
        preset = self.src.origin.get(f"{path}.{PRESET_MARK}")
        return preset[0] if preset else self.src.where(path)[0]

    def comment(self, path: str, parent: str) -> str | None:
        if path not in self.src.origin:  # a default of the schema, or inside a value written as a whole
            return None
        file, home = self.src.where(path)[0], self.file(parent) if parent else self.top
        if file == home:
            return None
        if file == self.cal_file:
            return f"calibrated: {self.constants.get(path, '?')} ({_shown_path(file)})"
        if "(--set " in file:
            return "overridden: " + file[file.index("(--set ") + 1:-1]
        if _is_device(home) and not _is_device(file):
            return f"set in {_shown_path(file)} over preset {_shown_path(home)}"
        if _is_device(file) != _is_device(home):  # a part entering its preset: its `source` says so
            return None
        return f"inherited from {_shown_path(file)}"

    def inherited(self, data: dict, path: str) -> list[str]:
        """One line per device file the part's direct values come from through `extends` of its preset (the
        part's `source` is its preset's), e.g. 'inherited from devices/bch-9088.yaml: codeword_data, t'."""
        home, by_file = self.file(path), {}
        if not _is_device(home):
            return []
        for key in data:
            p = f"{path}.{key}"
            file = self.src.where(p)[0]
            if p in self.src.origin and file != home and _is_device(file) and key not in ("source", "note"):
                by_file.setdefault(file, []).append(key)
        return [f"inherited from {_shown_path(f)}: {', '.join(keys)}" for f, keys in by_file.items()]


def _is_device(file: str) -> bool:
    return Path(file).resolve().parent == (CONFIG_ROOT / "devices").resolve()


def render(system: BaseModel, src: Source) -> str:
    """YAML text of `system` with provenance comment lines."""
    prov = _Provenance(src)
    lines: list[str] = []

    def walk(data: dict, path: str, indent: str) -> None:
        lines.extend(f"{indent}# {note}" for note in (prov.inherited(data, path) if path else []))
        for key, value in data.items():
            p = f"{path}.{key}" if path else key
            note = prov.comment(p, path) if key not in ("source", "note") else None
            if note and not (note.startswith("inherited from devices/") and path):
                lines.append(f"{indent}# {note}")
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{key}:")
                walk(value, p, indent + "  ")
            else:
                text = yaml.safe_dump({key: value}, sort_keys=False, width=10**9, allow_unicode=True).rstrip("\n")
                lines.append(indent + text)

    walk(plain(system), "", "")
    return "\n".join(lines) + "\n"
