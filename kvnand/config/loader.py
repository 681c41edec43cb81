"""Load presets: YAML with line numbers, `extends:` and `preset:` deep merge, `--set` overrides, validation.

A system file may say `extends: other-system` (or a path) and state only what differs; a part may be
written as `{preset: NAME, ...overrides}` to pull `arch_configs/devices/NAME.yaml`. The resolved tree is
fully materialized, so `--set flash.die.cell.tR="3 us"` reaches any number. Every failure becomes one
InputError naming the file, the key path, the line (where YAML knows it) and what is allowed.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from kvnand.errors import InputError
from kvnand.paths import CONFIG_ROOT

# --set shortcuts (DESIGN.md): short key -> dotted path in the resolved system tree
SHORT_KEYS = {
    "channels": "flash.channels",
    "planes_per_die": "flash.die.geometry.planes",
    "page_size": "flash.die.geometry.page_size",
    "fmacs_per_plane": "flash.logic.fmacs_per_plane",
    "g2_dies": "kv.g2_dies",
    "mapping": "kv.mapping",
    "hg_pipeline": "schedule.hg_pipeline",
}
# `dies` is derived (channels x dies_per_channel); setting it keeps channels and changes dies per channel.
DERIVED_KEYS = ("dies",)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key (as key paths)."""


def _load_yaml_with_lines(text: str, file: str) -> tuple[Any, dict[str, int]]:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"malformed YAML: {problem}", file=file, line=line) from None

    def walk(n, path):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                p = f"{path}.{key}" if path else key
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, f"{path}[{i}]")

    if node is not None:
        walk(node, "")
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # constructor errors (bad tags etc.)
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"malformed YAML: {exc}", file=file,
                         line=mark.line + 1 if mark is not None else None) from None
    return data, lines


def deep_merge(base: Any, over: Any) -> Any:
    """`over` wins; mappings merge key by key; a None in `over` removes nothing (use explicit values)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


class Source:
    """Maps key paths of a resolved tree back to (file, line) for error messages."""

    def __init__(self, default_file: str):
        self.default_file = default_file
        self.origin: dict[str, tuple[str, int | None]] = {}

    def add(self, prefix: str, file: str, lines: dict[str, int]):
        for p, ln in lines.items():
            self.origin[f"{prefix}.{p}" if prefix else p] = (file, ln)

    def where(self, path: str) -> tuple[str, int | None]:
        p = path
        while p:
            if p in self.origin:
                return self.origin[p]
            p = p.rpartition(".")[0]
        return self.default_file, None


def _read(path: Path) -> tuple[Any, dict[str, int]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    return _load_yaml_with_lines(text, str(path))


def _find(kind_dir: str, name: str, relative_to: Path | None, key: str, file: str) -> Path:
    p = Path(name)
    candidates = []
    if p.suffix in (".yaml", ".yml"):
        candidates += [p] + ([relative_to.parent / p] if relative_to else [])
    candidates.append(CONFIG_ROOT / kind_dir / f"{name}.yaml")
    for c in candidates:
        if c.is_file():
            return c
    available = sorted(x.stem for x in (CONFIG_ROOT / kind_dir).glob("*.yaml"))
    raise InputError(f"unknown {kind_dir[:-1]} preset '{name}'", file=file, key=key,
                     allowed=", ".join(available) + ", or a path to a .yaml file")


def _resolve_file(path: Path, kind_dir: str, src: Source, prefix: str, seen: tuple = ()) -> dict:
    data, lines = _read(path)
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", file=str(path))
    src.add(prefix, str(path), lines)
    if path.resolve() in seen:
        raise InputError("circular 'extends'", file=str(path), key="extends")
    base_name = data.pop("extends", None)
    if base_name is not None:
        if not isinstance(base_name, str):
            raise InputError("'extends' takes a preset name or a path", file=str(path), key="extends",
                             value=base_name)
        base_path = _find(kind_dir, base_name, path, "extends", str(path))
        base = _resolve_file(base_path, kind_dir, Source(str(base_path)), prefix, seen + (path.resolve(),))
        # origins of the base are weaker than ours: re-add ours last
        src.add(prefix, str(base_path), {})
        data = deep_merge(base, data)
    return _resolve_presets(data, path, src, prefix)


def _resolve_presets(tree: Any, file: Path, src: Source, prefix: str) -> Any:
    """Replace every {preset: NAME, ...} mapping by the device preset merged with the local overrides."""
    if isinstance(tree, dict):
        if "preset" in tree:
            name = tree["preset"]
            if not isinstance(name, str):
                raise InputError("'preset' takes a device preset name", file=str(file), key=f"{prefix}.preset",
                                 value=name)
            dev_path = _find("devices", name, file, f"{prefix}.preset", str(file))
            base = _resolve_file(dev_path, "devices", src, prefix)
            local = {k: v for k, v in tree.items() if k != "preset"}
            tree = deep_merge(base, _resolve_presets(local, file, src, prefix))
            tree.pop("kind", None)
            tree.pop("schema_version", None)
            return tree
        return {k: _resolve_presets(v, file, src, f"{prefix}.{k}" if prefix else k) for k, v in tree.items()}
    return tree


def parse_value(text: str) -> Any:
    """A --set value: YAML scalar syntax (numbers, true/false, null) else the string itself."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v


def apply_overrides(tree: dict, overrides: dict[str, Any], file: str) -> dict:
    tree = copy.deepcopy(tree)
    for key, value in overrides.items():
        if isinstance(value, str):
            value = parse_value(value)
        if key == "dies":
            fl = tree.get("flash", {})
            ch = fl.get("channels", 1)
            if not isinstance(value, int) or value <= 0 or value % ch:
                raise InputError(f"'dies' must be a positive multiple of flash.channels ({ch})", file=file,
                                 key="dies", value=value)
            fl["dies_per_channel"] = value // ch
            continue
        path = SHORT_KEYS.get(key, key)
        node = tree
        parts = path.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                raise InputError("--set path does not exist in the resolved config", file=file, key=key,
                                 allowed="a dotted path shown by `kvnand show-config`, or one of "
                                 + ", ".join(sorted([*SHORT_KEYS, *DERIVED_KEYS])))
            node = node[part]
        if not isinstance(node, dict):
            raise InputError("--set path does not exist in the resolved config", file=file, key=key,
                             allowed="a dotted path shown by `kvnand show-config`, or one of "
                             + ", ".join(sorted([*SHORT_KEYS, *DERIVED_KEYS])))
        node[parts[-1]] = value  # a new leaf may set a defaulted field; the schema rejects unknown ones
    return tree


def _validate(model_cls, tree: dict, src: Source):
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(x) for x in err["loc"])
        file, line = src.where(path)
        msg = err["msg"].removeprefix("Value error, ")
        allowed = None
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(model_cls, err["loc"][:-1])
        elif err["type"] == "literal_error":
            allowed = msg.split("Input should be ", 1)[-1]
            msg = "value not allowed"
        elif err["type"] == "missing":
            msg = "required key is missing"
        extra = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        value = err.get("input") if err["type"] not in ("missing", "model_type") else None
        if isinstance(value, dict):
            value = None
        raise InputError(msg + extra, file=file, key=path or None, line=line, value=value,
                         allowed=allowed) from None


def _allowed_keys(model_cls, loc) -> str:
    cls = model_cls
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        for cand in getattr(ann, "__args__", (ann,)):
            if hasattr(cand, "model_fields"):
                cls = cand
                break
    return ", ".join(getattr(cls, "model_fields", {}).keys())


def system_path(name_or_path: str) -> Path:
    return _find("systems", name_or_path, None, "system", "command line")


@lru_cache(maxsize=256)
def _resolved_tree(path: str) -> tuple[dict, Source]:
    src = Source(path)
    tree = _resolve_file(Path(path), "systems", src, "")
    return tree, src


def resolve_system_tree(name_or_path: str) -> tuple[dict, Source]:
    """The merged tree of a system preset (not yet validated), and where each key came from."""
    tree, src = _resolved_tree(str(system_path(name_or_path)))
    return copy.deepcopy(tree), src


def calibration_for(system_name: str) -> dict[str, float]:
    """The calibration constants (arch_configs/calibration.yaml) that apply to a system: path -> value."""
    return {c.path: f"{c.value} {c.unit}".strip() for c in load_calibration().constants.values()
            if c.applies(system_name)}


@lru_cache(maxsize=4096)
def _load_system_cached(name_or_path: str, frozen_overrides: tuple):
    from kvnand.config.schema import System

    tree, src = resolve_system_tree(name_or_path)
    # fitted constants first (the only place they enter), then the user's overrides
    calibrated = calibration_for(str(tree.get("name", "")))
    if calibrated:
        tree = apply_overrides(tree, calibrated, str(CONFIG_ROOT / "calibration.yaml"))
    if frozen_overrides:
        tree = apply_overrides(tree, dict(frozen_overrides), src.default_file)
    return _validate(System, tree, src)


def load_system(name_or_path: str, overrides: dict[str, Any] | None = None):
    """Resolve, override and validate a system preset; cached by (name, overrides)."""
    frozen = tuple(sorted((k, v if not isinstance(v, (dict, list)) else repr(v)) for k, v in
                          (overrides or {}).items()))
    return _load_system_cached(name_or_path, frozen)


@lru_cache(maxsize=1)
def load_calibration():
    from kvnand.config.schema import Calibration

    path = CONFIG_ROOT / "calibration.yaml"
    data, lines = _read(path)
    src = Source(str(path))
    src.add("", str(path), lines)
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", file=str(path))
    return _validate(Calibration, data, src)


def system_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / "systems").glob("*.yaml"))
