"""Load presets: YAML with line numbers, `extends:` and `preset:` deep merge, `--set` overrides, validation.

A system file may say `extends: other-system` (or a path) and state only what differs; a part may be
written as `{preset: NAME, ...overrides}` to pull `arch_configs/devices/NAME.yaml` (the part is then that
preset plus the overrides, whatever a base system had there). The resolved tree is fully materialized, so
`--set flash.die.cell.tR="3 us"` reaches any number. Every failure becomes one InputError naming the file,
the key path, the line (where YAML knows it), the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Union, get_args, get_origin

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
# overrides of the workload's KV policy (kvnand.workload.kv_policy), not of the system: load_system skips them
POLICY_KEY = "kv_policy"


def is_policy_key(key) -> bool:
    """`kv_policy` (a policy's name) or `kv_policy.FIELD`."""
    return isinstance(key, str) and (key == POLICY_KEY or key.startswith(POLICY_KEY + "."))

# The short key `page_size` holds die capacity (_hold_die_capacity); the dotted path
# flash.die.geometry.page_size changes the page alone.
SCHEMA_VERSIONS = (1,)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _printable(text: str) -> str:
    """A key path for a one-line message: control characters (a newline in a key) shown escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parent(path: str) -> str:
    if path.endswith("]") and "[" in path:
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


class _Shown:
    """A value in an error message, shortened so a huge list or string stays one readable line."""

    def __init__(self, value: Any, limit: int = 80):
        r = repr(value)
        self.text = r if len(r) <= limit else r[: limit - 3] + "..."

    def __repr__(self) -> str:
        return self.text


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _Shown(value)


_MAX_NODES = 100_000  # a system with all its parts is a few hundred values
_MAX_DEPTH = 100  # a system is about 5 levels deep


class _NumberLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 and 5e8 as numbers, as YAML 1.2 does (YAML 1.1 wants 1.0e-4 and makes 1e-4 a
    string, which the strict schema would then refuse as "not a number")."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


class _LineLoader(_NumberLoader):
    """The loader of config files: remembers the line of every mapping key (as key paths)."""


def _load_yaml_with_lines(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML text; return the data and {key path: line} ('a.b', 'a.list[0].c')."""
    lines: dict[str, int] = {}

    def fail(exc: BaseException) -> InputError:
        if isinstance(exc, RecursionError):
            return InputError("malformed YAML: nested too deeply", file=file,
                              allowed=f"YAML nested at most {_MAX_DEPTH} levels")
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        if isinstance(exc, yaml.YAMLError):
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            ctx = getattr(exc, "context", None)
            if ctx and "found unhashable key" not in problem:
                problem = f"{problem} ({ctx})"
        else:  # PyYAML's constructors raise plain ValueError/OverflowError for e.g. the date 2001-02-30
            return InputError(f"malformed YAML: cannot read a value ({type(exc).__name__}: {exc})", file=file,
                              allowed="valid YAML scalars (quote a string that looks like a date or number)")
        return InputError(f"malformed YAML: {problem}", file=file, line=line,
                          allowed="YAML with spaces (no tabs) for indentation, closed brackets and quotes")

    budget = [_MAX_NODES]

    def walk(n, path, depth=0):
        budget[0] -= 1
        if budget[0] < 0:  # e.g. "billion laughs": aliases of aliases expanding to an enormous tree
            raise InputError(f"the document expands to more than {_MAX_NODES} values (through YAML aliases?)",
                             file=file, allowed="a configuration of ordinary size; fewer nested aliases")
        if depth > _MAX_DEPTH:  # later stages recurse too; stop here with a message, not a RecursionError
            raise InputError("malformed YAML: nested too deeply", file=file, key=_short(_printable(path)) or None,
                             line=n.start_mark.line + 1, allowed=f"YAML nested at most {_MAX_DEPTH} levels")
        if isinstance(n, yaml.MappingNode):
            keys: set = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else "?"
                p = _join(path, key)
                if isinstance(k, yaml.ScalarNode) and key != "<<":
                    if (k.tag, key) in keys:
                        raise InputError("duplicate key (YAML would silently keep only the last one)", file=file,
                                         key=_printable(p), line=k.start_mark.line + 1,
                                         allowed="each key once per mapping")
                    keys.add((k.tag, key))
                lines.setdefault(p, k.start_mark.line + 1)
                walk(v, p, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, f"{path}[{i}]", depth + 1)

    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                walk(node, "")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise fail(exc) from None
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
            self.origin[_join(prefix, p)] = (file, ln)

    def where(self, path: str) -> tuple[str, int | None]:
        p = path
        while p:
            if p in self.origin:
                return self.origin[p]
            p = _parent(p)
        return self.default_file, None

    def copy(self) -> Source:
        out = Source(self.default_file)
        out.origin = dict(self.origin)
        return out


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """(data, {key path: line}) of a YAML file; parsed files are cached by (path, mtime, size), copies returned."""
    path = Path(path)
    if _is(path, "dir"):
        raise InputError("is a directory, not a file", file=str(path), allowed="a YAML file")
    try:
        st = path.stat()
    except (OSError, ValueError):
        return _read_uncached(str(path))  # reports the problem
    data, lines = _read_cached(str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    return copy.deepcopy(data), dict(lines)


@lru_cache(maxsize=512)
def _read_cached(path: str, mtime_ns: int, size: int, inode: int) -> tuple[Any, dict[str, int]]:
    return _read_uncached(path)


def _read_uncached(path: str) -> tuple[Any, dict[str, int]]:
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read file: {getattr(exc, 'strerror', None) or exc}", file=path,
                         allowed="a readable YAML file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file (undecodable byte at offset {exc.start})", file=path,
                         allowed="a YAML text file in UTF-8") from None
    return _load_yaml_with_lines(text, path)


def _looks_like_path(name: str) -> bool:
    return Path(name).suffix in (".yaml", ".yml") or "/" in name or "\\" in name


def _is(p: Path, what: str) -> bool:
    try:
        return p.is_file() if what == "file" else p.is_dir()
    except (OSError, ValueError):  # a NUL byte or an over-long name is simply not a file
        return False


def _find(kind_dir: str, name: str, relative_to: Path | None, key: str, file: str, line: int | None = None) -> Path:
    """A preset name (stem of arch_configs/KIND/NAME.yaml) or a path (relative to the referring file, else cwd)."""
    kind = kind_dir[:-3] + "y" if kind_dir.endswith("ies") else kind_dir[:-1]
    p = Path(name)
    candidates: list[Path] = []
    if _looks_like_path(name):
        if relative_to is not None and not p.is_absolute():
            candidates.append(relative_to.parent / p)
        candidates.append(p)
        if len(p.parts) == 1:  # "kvnand-c16.yaml" also names the shipped preset
            candidates.append(CONFIG_ROOT / kind_dir / p.name)
    else:
        candidates.append(CONFIG_ROOT / kind_dir / f"{name}.yaml")
    for c in candidates:
        if _is(c, "file"):
            return c
    # only a miss lists the presets (a directory listing on every lookup was a visible part of evaluate())
    available = sorted(x.stem for x in (CONFIG_ROOT / kind_dir).glob("*.yaml"))
    allowed = ", ".join(available) + ", or a path to a .yaml file"
    if _looks_like_path(name):
        is_dir = any(_is(c, "dir") for c in candidates)
        problem = f"is a directory, not a {kind} YAML file" if is_dir else f"no such {kind} file"
        if relative_to is None:  # the command line: the file itself is what is wrong
            raise InputError(problem, file=name,
                             allowed=f"an existing {kind} YAML file or a preset name: {', '.join(available)}")
        raise InputError(problem, file=file, key=_printable(key), line=line, value=name, allowed=allowed)
    raise InputError(f"unknown {kind} preset '{_printable(name)}'", file=file, key=_printable(key), line=line,
                     allowed=allowed)


def preset_path(kind_dir: str, name: str) -> Path:
    """A preset named on the command line (stem of arch_configs/KIND_DIR/NAME.yaml) or a path to one."""
    return _find(kind_dir, name, None, kind_dir[:-3] + "y" if kind_dir.endswith("ies") else kind_dir[:-1],
                 "command line")


def _check_version(data: dict, file: str, lines: dict[str, int]) -> None:
    if "schema_version" not in data:
        raise InputError("required key is missing", file=file, key="schema_version",
                         allowed="schema_version: 1 (the format version of this file, on every preset file)")
    v = data["schema_version"]
    if isinstance(v, bool) or v not in SCHEMA_VERSIONS:
        raise InputError("unsupported format version", file=file, key="schema_version",
                         line=lines.get("schema_version"), value=_shown(v),
                         allowed=", ".join(map(str, SCHEMA_VERSIONS)))


def _resolve(path: Path, kind_dir: str, prefix: str, seen: tuple) -> tuple[dict, dict[str, tuple[str, int | None]]]:
    """The materialized tree of one preset file (extends and presets merged) and the origin of each key path."""
    file = str(path)
    data, lines = read_yaml(path)
    if data is None:
        raise InputError("the file is empty", file=file, allowed=f"a {kind_dir[:-1]} description (a YAML mapping)")
    if not isinstance(data, dict):
        raise InputError("expected a mapping (key: value lines) at the top level", file=file,
                         value=_shown(data), allowed=f"a {kind_dir[:-1]} description (a YAML mapping)")
    _check_version(data, file, lines)
    here = seen + (path.resolve(),)
    own = {_join(prefix, p): (file, ln) for p, ln in lines.items()}
    origins: dict[str, tuple[str, int | None]] = {}
    base: Any = None
    if "extends" in data:
        base_name = data.pop("extends")
        if not isinstance(base_name, str):
            raise InputError("'extends' takes a preset name or a path", file=file, key="extends",
                             line=lines.get("extends"), value=_shown(base_name),
                             allowed=f"a {kind_dir[:-1]} preset name or a path to a .yaml file")
        base_path = _find(kind_dir, base_name, path, "extends", file, lines.get("extends"))
        if base_path.resolve() in here:
            chain = " -> ".join(str(Path(p).name) for p in (*here, base_path.resolve()))
            raise InputError(f"circular 'extends' ({chain})", file=file, key="extends",
                             line=lines.get("extends"), value=base_name,
                             allowed="a chain of 'extends' that ends in a file without 'extends'")
        base, base_origins = _resolve(base_path, kind_dir, prefix, here)
        origins.update(base_origins)
    tree = _materialize(data, base, path, prefix, origins, own, here)
    origins.update(own)  # what this file states is where a key comes from
    return tree, origins


_MISSING = object()
PRESET_MARK = "(preset)"  # Source key (no real key looks like it) recording the device file a part came from


def _materialize(over: Any, base: Any, file: Path, prefix: str, origins: dict, own: dict, seen: tuple) -> Any:
    """Merge `over` (raw YAML of `file`) onto `base`, replacing every {preset: NAME, ...} by the device preset."""
    if isinstance(over, dict):
        if "preset" in over:
            key = _join(prefix, "preset")
            name = over["preset"]
            line = own.get(key, (None, None))[1]
            if not isinstance(name, str):
                raise InputError("'preset' takes a device preset name", file=str(file), key=_printable(key), line=line,
                                 value=_shown(name), allowed="a device preset name or a path to a .yaml file")
            dev_path = _find("devices", name, file, key, str(file), line)
            if dev_path.resolve() in seen:
                chain = " -> ".join(Path(p).name for p in (*seen, dev_path.resolve()))
                raise InputError(f"circular 'preset' ({chain})", file=str(file), key=_printable(key), line=line,
                                 value=name, allowed="a device preset that does not refer back to this file")
            dev_tree, dev_origins = _resolve(dev_path, "devices", prefix, seen)
            for k in [k for k in origins if _under(k, prefix)]:  # the part is replaced, not merged
                del origins[k]
            origins.update(dev_origins)
            origins[_join(prefix, PRESET_MARK)] = (str(dev_path), None)  # which preset the part is
            dev_tree.pop("kind", None)
            dev_tree.pop("schema_version", None)
            local = {k: v for k, v in over.items() if k != "preset"}
            return _materialize(local, dev_tree, file, prefix, origins, own, seen)
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in over.items():
            out[k] = _materialize(v, out.get(k, _MISSING), file, _join(prefix, k), origins, own, seen)
        return out
    if isinstance(over, list):
        return [_materialize(v, _MISSING, file, f"{prefix}[{i}]", origins, own, seen) for i, v in enumerate(over)]
    return over


def _resolve_file(path: Path, kind_dir: str, src: Source, prefix: str, seen: tuple = ()) -> dict:
    """Resolve one preset file into a tree; record where each key came from in `src`."""
    tree, origins = _resolve(Path(path), kind_dir, prefix, tuple(seen))
    src.origin.update(origins)
    return tree


def parse_value(text: str) -> Any:
    """A --set value: YAML scalar syntax (numbers, true/false, null, [lists], {maps}) else the string itself."""
    try:
        v = yaml.load(text, Loader=_NumberLoader)  # a SafeLoader subclass
    except Exception:  # noqa: BLE001 -- anything YAML cannot read is meant as a plain string
        return text
    return v


def _set_allowed() -> str:
    return ("a dotted path shown by `kvnand show-config`, or one of " + ", ".join(sorted([*SHORT_KEYS, *DERIVED_KEYS]))
            + f", or {POLICY_KEY}.FIELD")


def _set_path(key: str) -> str:
    return "flash.dies_per_channel" if key == "dies" else SHORT_KEYS.get(key, key)


def apply_overrides(tree: dict, overrides: dict[str, Any], file: str) -> dict:
    """`--set` overrides (dotted paths or SHORT_KEYS; `page_size` and `dies` last) on a copy of `tree`. KV-policy
    overrides belong to the workload and are skipped."""
    tree = copy.deepcopy(tree)
    overrides = {k: v for k, v in overrides.items() if not is_policy_key(k)}
    # `page_size` holds the die as the other overrides leave it (their pages per block and spare), whatever
    # the order they were given in; `dies` depends on channels
    late = ("page_size", *DERIVED_KEYS)
    items = [(k, v) for k, v in overrides.items() if k not in late]
    items += [(k, v) for key in late for k, v in overrides.items() if k == key]
    for key, value in items:
        if isinstance(value, str):
            value = parse_value(value)
        if not isinstance(key, str) or not key:
            raise InputError("--set needs a key", file=file, key=str(key), allowed=_set_allowed())
        if key == "dies":
            fl = tree.get("flash")
            if not isinstance(fl, dict):
                raise InputError("this system has no IFC flash array to set 'dies' on", file=file, key="dies",
                                 value=_shown(value), allowed=_set_allowed())
            ch = fl.get("channels", 1)
            if isinstance(ch, bool) or not isinstance(ch, int) or ch <= 0:
                raise InputError("'dies' needs flash.channels to be a positive integer", file=file,
                                 key="flash.channels", value=_shown(ch), allowed="a positive integer")
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % ch:
                raise InputError(f"'dies' must be a positive multiple of flash.channels ({ch})", file=file,
                                 key="dies", value=_shown(value), allowed=f"{ch}, {2 * ch}, {3 * ch}, ...")
            fl["dies_per_channel"] = value // ch
            continue
        if key == "page_size" and _hold_die_capacity(tree, value, file):
            continue
        path = SHORT_KEYS.get(key, key)
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                raise InputError("--set path does not exist in the resolved config", file=file, key=_printable(key),
                                 allowed=_set_allowed())
            node = node[part]
        if not isinstance(node, dict):
            raise InputError("--set path does not exist in the resolved config", file=file, key=_printable(key),
                             allowed=_set_allowed())
        node[parts[-1]] = value  # a new leaf may set a defaulted field; the schema rejects unknown ones
    return tree


def _hold_die_capacity(tree: dict, value: Any, file: str) -> bool:
    """`page_size` as a short key: the new page size with the die's capacity held. The block keeps its bytes,
    so a page k times larger leaves k times fewer pages per block; blocks per plane (the erase units that wear,
    read disturb and refresh count, and 177 on the KVNAND die: not divisible by 2) stay. The spare area scales
    with the page: each page keeps its ECC codewords' parity. False (nothing done) when the geometry or the
    value cannot be read: the schema then reports the problem as for any other key."""
    from kvnand.config import units
    from kvnand.config.schema import MAX_PAGES_PER_BLOCK

    geo: Any = tree
    for part in ("flash", "die", "geometry"):
        geo = geo.get(part) if isinstance(geo, dict) else None
    if not isinstance(geo, dict) or isinstance(geo.get("pages_per_block"), bool) or \
            not isinstance(geo.get("pages_per_block"), int):
        return False
    try:
        new, old = units.parse(value, "bytes"), units.parse(geo.get("page_size"), "bytes")
        spare = units.parse(geo["spare_size"], "bytes") if "spare_size" in geo else 0.0
    except units.UnitParseError:
        return False
    if new < 1 or new != int(new) or old <= 0:  # not a page at all: the schema says what a page size is
        return False
    block = old * geo["pages_per_block"]
    pages = block / new
    if pages != int(pages) or not 1 <= pages <= MAX_PAGES_PER_BLOCK:
        raise InputError(f"page_size holds die capacity: a block of {block:.0f} B ({geo['pages_per_block']} pages of "
                         f"{old:g} B) is not a whole number of {new:g} B pages (at most {MAX_PAGES_PER_BLOCK})",
                         file=file, key="page_size",
                         value=_shown(value),
                         allowed="a page size that divides the block, e.g. " +
                                 ", ".join(f"'{int(old * f) // 1024} KiB'" for f in (1, 2, 4) if block % (old * f) == 0)
                         + "; or set flash.die.geometry.page_size and pages_per_block yourself")
    geo["page_size"] = value
    geo["pages_per_block"] = int(pages)
    if spare:
        geo["spare_size"] = f"{spare * new / old:.15g} B"
    return True


# ------------------------------------------------------------------------------------------ validation
_TYPE_HINTS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string (quote it if YAML reads it as something else)",
    "list_type": "a list", "dict_type": "a mapping (key: value)", "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


# pydantic names the member of a union that failed inside the location ("str", "dict[str,float]"); not a key
_UNION_TAG = re.compile(r"(str|int|float|bool|constrained-\w+|[a-z-]+\[.*\])")


def _loc_path(loc) -> str:
    out = ""
    for x in loc:
        if isinstance(x, int):
            out += f"[{x}]"
        elif x == "[key]" or _UNION_TAG.fullmatch(x):
            continue
        else:
            out = _join(out, x)
    return out


def _strip(ann: Any) -> Any:
    """Remove Optional/Annotated wrappers from an annotation."""
    while True:
        origin = get_origin(ann)
        if origin is Union or type(ann).__name__ == "UnionType":
            args = [a for a in get_args(ann) if a is not type(None)]
            ann = args[0] if args else ann
            if len(args) != 1:
                return ann
        elif hasattr(ann, "__metadata__"):
            ann = ann.__origin__
        else:
            return ann


def _annotation_at(model_cls, loc) -> Any:
    ann: Any = model_cls
    for part in loc:
        ann = _strip(ann)
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            field = ann.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            ann = field.annotation
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        elif get_origin(ann) in (list, tuple):
            ann = get_args(ann)[0]
        else:
            return None
    return _strip(ann)


def _description_at(model_cls, loc) -> str | None:
    """The schema's description of the field at `loc` (it states the allowed range), if any."""
    parent = _annotation_at(model_cls, loc[:-1])
    field = getattr(parent, "model_fields", {}).get(loc[-1]) if loc else None
    return field.description if field is not None else None


def _allowed_keys(model_cls, loc) -> str:
    ann = _annotation_at(model_cls, loc)
    return ", ".join(getattr(ann, "model_fields", {}).keys())


def validate_tree(model_cls, tree: dict, src: Source, context: dict | None = None):
    """`model_cls` validated from `tree` (with pydantic's validation `context`); the first problem becomes one
    InputError naming the file, line and key (`src` knows where each key came from)."""
    from pydantic import ValidationError

    from kvnand.config.schema import ConfigValueError

    try:
        return model_cls.model_validate(tree, context=context)
    except ValidationError as exc:
        errors = exc.errors()
        # a value that fits no member of a union fails once per member; the deepest failure under the first
        # one's key says most (for `[true]` against "a mapping or a list of names": item 0 is not a name)
        first = _loc_path(errors[0]["loc"])
        err = max((e for e in errors if _under(_loc_path(e["loc"]), first)), key=lambda e: len(_loc_path(e["loc"])))
        loc = tuple(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        msg = err["msg"].removeprefix("Value error, ")
        value: Any = err.get("input")
        allowed = None
        path = _loc_path(loc)
        cause = ctx.get("error")
        if isinstance(cause, ConfigValueError):
            msg, allowed = cause.problem, cause.allowed
            if cause.key:
                path = _join(path, cause.key)
            if cause.has_value:
                value = cause.value
        elif kind == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(model_cls, loc[:-1])
        elif kind == "literal_error":
            msg = "value not allowed"
            allowed = str(ctx.get("expected", msg.split("Input should be ", 1)[-1]))
        elif kind == "missing":
            msg = "required key is missing"
            value = None
            ann = _annotation_at(model_cls, loc)
            if hasattr(ann, "model_fields"):
                allowed = "{preset: NAME} or a mapping with keys " + ", ".join(ann.model_fields)
            else:
                allowed = f"a '{loc[-1]}' entry" if loc else None
        elif kind in ("model_type", "model_attributes_type"):
            msg = "expected a mapping"
            keys = _allowed_keys(model_cls, loc)
            allowed = f"a mapping with keys {keys}" if keys else "a mapping"
        elif kind in _BOUNDS:
            bound = next(iter(ctx.values()), None)
            msg = f"must be {_BOUNDS[kind]} {bound}"
            allowed = _description_at(model_cls, loc) or f"a value {_BOUNDS[kind]} {bound}"
        elif kind == "too_short":
            msg = "must not be empty"
        elif kind in _TYPE_HINTS:
            msg = f"wrong type ({msg})"
            allowed = _TYPE_HINTS[kind]
        if isinstance(value, dict):
            value = None
        file, line = src.where(path)
        extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(msg + extra, file=file, key=_printable(path) or None, line=line, value=_shown(value),
                         allowed=allowed) from None


def system_path(name_or_path: str) -> Path:
    return _find("systems", name_or_path, None, "system", "command line")


def _stamp(files) -> tuple:
    """What identifies the content of these files without reading them: (file, mtime, size, inode) each."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_mtime_ns, st.st_size, st.st_ino))
        except (OSError, ValueError):
            out.append((f, None))
    return tuple(out)


_TREES: dict[tuple[str, str], tuple[tuple, dict, Source]] = {}


def _resolved_tree(path: Path) -> tuple[dict, Source, tuple]:
    """(tree, sources, stamp) of a system file; cached until any file it was built from changes (a long-lived
    process, such as a notebook or a test session, sees an edited or replaced file)."""
    key = (str(path), os.path.abspath(path))
    hit = _TREES.get(key)
    if hit is not None and _stamp(f for f, *_ in hit[0]) == hit[0]:
        return hit[1], hit[2], hit[0]
    src = Source(str(path))
    tree = _resolve_file(path, "systems", src, "")
    stamp = _stamp(sorted({key[1], *(os.path.abspath(f) for f, _ in src.origin.values())}))
    if len(_TREES) > 256:
        _TREES.clear()
    _TREES[key] = (stamp, tree, src)
    return tree, src, stamp


def resolve_system_tree(name_or_path: str) -> tuple[dict, Source]:
    """The merged tree of a system preset (not yet validated), and where each key came from."""
    tree, src, _ = _resolved_tree(system_path(name_or_path))
    return copy.deepcopy(tree), src.copy()


def calibration_for(system_name: str) -> dict[str, float]:
    """The calibration constants (arch_configs/calibration.yaml) that apply to a system: path -> value."""
    return {c.path: f"{c.value} {c.unit}".strip() for c in load_calibration().constants.values()
            if c.applies(system_name)}


def _override_origins(src: Source, overrides: dict[str, Any], file_of) -> None:
    """Overridden keys come from where the override was given, not from the preset's YAML."""
    for key, value in overrides.items():
        path = _set_path(key)
        for p in [p for p in src.origin if _under(p, path)]:
            del src.origin[p]
        src.origin[path] = (file_of(key, value), None)


def _with_overrides(name_or_path: str, frozen_overrides: tuple) -> tuple[dict, Source]:
    """The tree of a system with its calibration constants and overrides applied, and where each key came
    from (an overridden key from the override, a calibrated one from calibration.yaml)."""
    tree, src = resolve_system_tree(name_or_path)
    # fitted constants first (the only place they enter), then the user's overrides; the constants are those
    # of the system's final name (`--set name=X` makes it system X as far as calibration goes)
    name = tree.get("name", "")
    if frozen_overrides and "name" in dict(frozen_overrides):
        name = apply_overrides({"name": name}, {"name": dict(frozen_overrides)["name"]}, src.default_file)["name"]
    calibrated = calibration_for(str(name))
    if calibrated:
        cal_file = str(CONFIG_ROOT / "calibration.yaml")
        tree = apply_overrides(tree, calibrated, cal_file)
        _override_origins(src, calibrated, lambda k, v: cal_file)
    if frozen_overrides:
        overrides = dict(frozen_overrides)
        tree = apply_overrides(tree, overrides, src.default_file)
        _override_origins(src, overrides, lambda k, v: f"{src.default_file} (--set {_printable(_short(f'{k}={v}'))})")
    return tree, src


@lru_cache(maxsize=4096)
def _load_system_cached(name_or_path: str, stamp: tuple, frozen_overrides: tuple):
    from kvnand.config.schema import System

    return validate_tree(System, *_with_overrides(name_or_path, frozen_overrides))


def _frozen(overrides: dict[str, Any] | None) -> tuple:
    """The system overrides as a cache key (the workload's KV-policy overrides left out)."""
    return tuple(sorted((k, v if not isinstance(v, (dict, list)) else repr(v)) for k, v in (overrides or {}).items()
                        if not is_policy_key(k)))


def load_system(name_or_path: str, overrides: dict[str, Any] | None = None):
    """Resolve, override and validate a system preset; cached by (name, overrides). KV-policy overrides
    belong to the workload and are skipped."""
    return _load_system_cached(name_or_path, _resolved_tree(system_path(name_or_path))[2], _frozen(overrides))


def load_systems(name_or_path: str, overrides: list[dict[str, Any]]) -> list:
    """load_system() of one preset under each of many overrides, its files found and checked once."""
    stamp = _resolved_tree(system_path(name_or_path))[2]
    return [_load_system_cached(name_or_path, stamp, _frozen(ov)) for ov in overrides]


def system_origins(name_or_path: str, overrides: dict[str, Any] | None = None) -> Source:
    """Where each key of a system (as load_system resolves it) came from: its file, an extended system, a
    device preset (recorded under `<part>.(preset)`), calibration.yaml or an override."""
    return _with_overrides(name_or_path, _frozen(overrides))[1]


def read_source(path: Path) -> tuple[dict, Source]:
    """A standalone YAML mapping (no extends/presets) and where each of its keys is, for error messages."""
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", file=str(path))
    src = Source(str(path))
    src.add("", str(path), lines)
    return data, src


def load_file(path: Path, model_cls):
    """A standalone YAML file validated against `model_cls`; errors name file, line and key."""
    return validate_tree(model_cls, *read_source(path))


def load_device(name: str, model_cls, kind: str):
    """A device preset (arch_configs/devices/NAME.yaml, or a path), resolved and validated as `kind`."""
    path = _find("devices", name, None, kind, "command line")
    src = Source(str(path))
    tree = _resolve_file(path, "devices", src, "")
    if tree.pop("kind", kind) != kind:
        raise InputError(f"not a {kind} device preset", file=str(path), key="kind")
    tree.pop("schema_version", None)
    return validate_tree(model_cls, tree, src)


@lru_cache(maxsize=1)
def load_calibration():
    from kvnand.config.schema import Calibration

    return load_file(CONFIG_ROOT / "calibration.yaml", Calibration)


def system_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / "systems").glob("*.yaml"))
