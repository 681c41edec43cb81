"""Unit strings -> SI floats, parsed once at the config boundary with pint.

"4 us" -> 4e-6, "4 KiB" -> 4096, "4 KB" -> 4000, "4.8 GB/s" -> 4.8e9, "3 pJ/bit" -> 3e-12 (J per bit),
"400 MHz" -> 4e8, "0.0737 mm^2" -> 7.37e-8 (m^2). Bytes are the unit of information (bit = 1/8 B).
pint is imported lazily: it is the slowest import of the package (with its registry, ~0.3 s). Every quantity
pint has read is remembered in the user cache (`units.json` in kvnand.paths.cache_root(), keyed by this
module's source and pint's installed files), so a command whose configs hold only strings read before never
starts pint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

# pint's own `bit` is dimensionless (`bit = []`), which would let "3 pJ" pass for "3 pJ/bit", "4" for a size and
# "1 GHz" for a bandwidth. Information gets a dimension of its own here: every byte/bit spelling is rewritten to
# these two units (names no other unit or prefix combination can produce).
_BIT, _BYTE = "INFOBIT", "INFOBYTE"

# "KB", "Gb", "KiB", "MBps"-free forms: B = byte, b/bit = bit, K (no i) = kilo. pint alone reads "KB" as kelvin-byte.
_INFO = re.compile(r"(?<![A-Za-z])([kKMGTPE]?)(i?)(B|b|bits?|bytes?)(?![A-Za-z])")


def _normalize_info_units(s: str) -> str:
    def fix(m: re.Match) -> str:
        prefix, binary, unit = m.groups()
        if prefix == "K" and not binary:
            prefix = "k"
        if prefix == "k" and binary:
            prefix = "K"
        name = _BYTE if unit.startswith("B") or unit.startswith("byte") else _BIT
        return f"{prefix}{binary}{name}"

    return _INFO.sub(fix, s)


# dimension name -> (pint unit the SI float is expressed in, human description)
DIMENSIONS: dict[str, tuple[str, str]] = {
    "time": ("second", "a time such as '4 us' or '75 us'"),
    "bytes": (_BYTE, "a size such as '4 KiB', '16 KB' or '5 MB'"),
    "bandwidth": (f"{_BYTE} / second", "a rate such as '4.8 GB/s' or '14.6 Gbit/s'"),
    "energy": ("joule", "an energy such as '98 nJ'"),
    "energy_per_bit": (f"joule / {_BIT}", "an energy per bit such as '3 pJ/bit'"),
    "frequency": ("hertz", "a frequency such as '400 MHz'"),
    "power": ("watt", "a power such as '4.6 W' or '6.98 mW'"),
    "area": ("meter ** 2", "an area such as '0.0737 mm^2'"),
    "ops_rate": ("1 / second", "an operation rate such as '32 TOPS' or '2e12 / s'"),
    "money_per_byte": ("1 / byte", "a price per size such as '0.52 USD/GB' or '$0.72/GB'"),
}


def _atomic_disk_cache(cache) -> None:
    """Make pint's on-disk cache (shared by every kvnand process of the user) safe under concurrency.

    pint writes its cache files in place, so a process starting while another writes reads a truncated
    pickle, and a run killed mid-write leaves one behind for every later run. Here a file is written under
    a private name and renamed into place, and a file that cannot be read is a miss (rebuilt and replaced).
    """
    import os
    import uuid

    base = type(cache)

    class AtomicDiskCache(base):
        def rawload(self, header, cache_path=None):
            try:
                return super().rawload(header, cache_path)
            except Exception:  # noqa: BLE001 -- truncated, foreign or unreadable: rebuild
                return None

        def rawsave(self, header, converted_object, cache_path=None):
            final = cache_path if cache_path is not None else self.cache_path_for(header)
            tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}{final.suffix}")
            try:
                super().rawsave(header, converted_object, tmp)
                if tmp.with_suffix(".json").exists():
                    os.replace(tmp.with_suffix(".json"), final.with_suffix(".json"))
                os.replace(tmp, final)
            except OSError:
                pass  # a cache that cannot be written (read-only home, disk full) only costs speed
            finally:
                for leftover in (tmp, tmp.with_suffix(".json")):
                    leftover.unlink(missing_ok=True)
            return final

    cache.__class__ = AtomicDiskCache


# The physically sane range of each dimension (SI): wide enough for any device we might model, narrow enough
# that no product or quotient of config values overflows or divides by (almost) zero. A zero, where a field
# allows it ("no such cost"), is outside these ranges and admitted by the schema separately.
RANGES: dict[str, tuple[float, float, str]] = {
    "time": (1e-12, 3600.0, "1 ps to 1 h"),
    "bytes": (1.0, 2.0**60, "1 B to 1 EiB"),
    "bandwidth": (1e3, 1e15, "1 kB/s to 1 PB/s"),
    "energy": (1e-18, 1.0, "1 aJ to 1 J"),
    "energy_per_bit": (1e-18, 1e-6, "1 aJ/bit to 1 uJ/bit"),
    "frequency": (1e3, 1e12, "1 kHz to 1 THz"),
    "power": (1e-9, 1e6, "1 nW to 1 MW"),
    "area": (1e-18, 1.0, "1e-6 um^2 to 1 m^2"),
    "ops_rate": (1.0, 1e18, "1 /s to 1e18 /s (1 EOPS)"),
    "money_per_byte": (1e-18, 1.0, "1e-9 USD/GB to 1 USD/B"),
}


@cache
def _registry():
    import pint

    class Registry(pint.UnitRegistry):
        # the disk cache is created in __init__ and first used after it (pint's metaclass calls _after_init)
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if self._diskcache is not None:
                _atomic_disk_cache(self._diskcache)

    # pint's cache of its parsed definition files makes the registry ~8x faster to build after the first run
    try:
        ureg = Registry(non_int_type=float, cache_folder=":auto:")
    except OSError:  # no usable cache folder (read-only home, XDG_CACHE_HOME pointing nowhere): do without
        ureg = Registry(non_int_type=float)
    # Information has its own dimension (see _BIT); KiB etc. come from pint's binary prefixes.
    ureg.define(f"{_BIT} = [information]")
    ureg.define(f"{_BYTE} = 8 * {_BIT}")
    ureg.define("USD = [currency]")
    ureg.define("OPS = 1 / second")  # operations per second (TOPS = 1e12 OPS)
    ureg.define("FLOPS = 1 / second")
    return ureg


class UnitParseError(ValueError):
    """A quantity that cannot be read; `problem` says what is wrong, `allowed` what would be accepted."""

    def __init__(self, problem: str, allowed: str = "", reason: str | None = None):
        self.problem, self.allowed = problem, allowed
        self.reason = reason or problem  # the problem without repeating the text (for 'key: reason (got X)')
        super().__init__(f"{problem}; expected {allowed}" if allowed else problem)


# The shape accepted before pint sees the text: a number, then a unit expression made of unit names, '*', '/',
# parentheses and small integer exponents. This keeps pint's expression evaluator away from arbitrary
# arithmetic ("9**9**9 s" would otherwise compute a gigantic integer) and rejects a unit without a number.
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_UNIT_TOKEN = re.compile(r"\s+|\*\*|[*/()]|[A-Za-z_$\u00b5\u03bc%][A-Za-z_0-9\u00b5\u03bc]*|[+-]?\d+|.")
_NAME = re.compile(r"[A-Za-z_$\u00b5\u03bc%][A-Za-z_0-9\u00b5\u03bc]*")


def _check_shape(s: str) -> str | None:
    """None if `s` looks like 'NUMBER UNIT-EXPRESSION', else what is wrong."""
    m = _NUMBER.match(s)
    if not m:
        return "it does not start with a number"
    prev = "num"
    for tok in _UNIT_TOKEN.findall(s[m.end():]):
        if tok.isspace():
            continue
        if tok == "**":
            if prev not in ("name", ")"):
                return "'**' must follow a unit name"
            prev = "pow"
        elif tok.lstrip("+-").isdigit():
            if prev != "pow" or len(tok.lstrip("+-")) > 2:
                return "numbers may only appear first and as small exponents"
            prev = "exp"
        elif tok in "*/(" and len(tok) == 1:
            if prev == "pow":
                return "'**' needs an integer exponent"
            prev = tok
        elif tok == ")":
            prev = ")"
        elif _NAME.fullmatch(tok):
            prev = "name"
        else:
            return f"unexpected character {tok!r}"
    if prev in ("pow", "*", "/", "("):
        return "the unit expression is incomplete"
    return None


def parse(text: str | int | float, dimension: str) -> float:
    """Parse a quantity into the SI float of `dimension`; raise UnitParseError with what is allowed."""
    if dimension not in DIMENSIONS:
        raise KeyError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    desc = DIMENSIONS[dimension][1]
    if isinstance(text, bool):
        raise UnitParseError(f"{text!r} is not a quantity", desc)
    if isinstance(text, (int, float)):
        raise UnitParseError("a bare number has no unit", desc)
    if not isinstance(text, str):
        kind = {dict: "a mapping", list: "a list"}.get(type(text), f"a {type(text).__name__}")
        raise UnitParseError(f"{kind} is not a quantity", desc)
    return _parse_str(text, dimension)


@lru_cache(maxsize=4096)
def _parse_str(text: str, dimension: str) -> float:
    key = f"{dimension}\t{text}"
    value = _remembered().get(key)
    if value is None:
        value = _parse_with_pint(text, dimension)
        _remember(key, value)
    return value


@cache
def _memo_file() -> tuple[Path, str]:
    """(the file of remembered quantities, the fingerprint its values are good for: this module's source and the
    size and time of pint's package files, found without importing pint)."""
    import hashlib
    import importlib.util
    import os

    from kvnand.paths import cache_root

    h = hashlib.sha256(Path(__file__).read_bytes())
    spec = importlib.util.find_spec("pint")
    for f in sorted(Path(spec.origin).parent.glob("*.py")) if spec and spec.origin else ():
        st = os.stat(f)
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_root() / "units.json", h.hexdigest()


@cache
def _remembered() -> dict[str, float]:
    return _read_memo(*_memo_file())


def _read_memo(path: Path, fingerprint: str) -> dict[str, float]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        values = doc["values"] if doc.get("fingerprint") == fingerprint else {}
        return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, unreadable or not ours
        return {}


MEMO_MAX = 4096  # remembered quantities (the presets hold a few hundred; arbitrary --set text does not grow it)
_LEARNED: dict[str, float] = {}  # quantities pint read in this process, written to the memo when it exits


def _remember(key: str, value: float) -> None:
    import atexit

    if not _LEARNED:
        atexit.register(_write_memo)
    _LEARNED[key] = value
    _remembered()[key] = value


def _write_memo() -> None:
    """Add this process's quantities to the file, once (written whole and atomically over what is there now; a
    file that cannot be written is simply not used)."""
    from kvnand.io import write_text

    path, fingerprint = _memo_file()
    known = _read_memo(path, fingerprint)
    for key, value in _LEARNED.items():
        if len(known) >= MEMO_MAX:
            break
        known[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"fingerprint": fingerprint, "values": known}))
    except OSError:
        pass


def _parse_with_pint(text: str, dimension: str) -> float:
    unit, desc = DIMENSIONS[dimension]
    s = text.strip().replace("^", "**")
    if dimension == "money_per_byte" and s.startswith("$"):
        m = _NUMBER.match(s[1:])
        if m:  # "$0.72/GB" -> "0.72 USD /GB"
            s = f"{m.group().strip()} USD {s[1 + m.end():]}"
    s = _normalize_info_units(s)
    problem = _check_shape(s)
    if problem:
        raise UnitParseError(f"cannot read '{text}' as a quantity: {problem}", desc, f"not a quantity: {problem}")
    try:
        q = _registry().Quantity(s)
    except Exception as exc:  # pint raises many types for garbage
        why = "unknown unit" if type(exc).__name__ == "UndefinedUnitError" else type(exc).__name__
        raise UnitParseError(f"cannot read '{text}' as a quantity ({why})", desc, f"not a quantity ({why})") from None
    if not hasattr(q, "to"):
        raise UnitParseError(f"cannot read '{text}' as a quantity", desc, "not a quantity")
    if q.dimensionless:
        raise UnitParseError(f"'{text}' has no unit", desc, "no unit")
    target = _registry().Unit(unit) if dimension != "money_per_byte" else _registry().Unit(f"USD / {_BYTE}")
    try:
        value = float(q.to(target).magnitude)
    except OverflowError:  # a number with hundreds of digits
        raise UnitParseError(f"'{text}' is not finite", desc, "not finite") from None
    except Exception:
        raise UnitParseError(f"'{text}' has the wrong dimension", desc, "wrong unit dimension") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UnitParseError(f"'{text}' is not finite", desc, "not finite")
    return value


@dataclass(frozen=True)
class Dimension:
    """Marks a schema field as a quantity of this dimension (a key of DIMENSIONS), for printing it back."""

    name: str


# how a quantity is printed: (unit symbol, [(scale, prefix)]) with the largest prefix whose mantissa is >= 1
_DECIMAL = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")]
_SMALL = [(1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")]
_BINARY = [(2.0**50, "Pi"), (2.0**40, "Ti"), (2.0**30, "Gi"), (2.0**20, "Mi"), (2.0**10, "Ki"), (1.0, "")]
_FORMATS: dict[str, tuple[str, list[tuple[float, str]]]] = {
    "time": ("s", _SMALL), "energy": ("J", _SMALL), "energy_per_bit": ("J/bit", _SMALL), "power": ("W", _SMALL),
    "bandwidth": ("B/s", _DECIMAL), "frequency": ("Hz", _DECIMAL), "area": ("mm^2", [(1e-6, "")]),
    "ops_rate": ("/ s", [(1.0, "")]), "money_per_byte": ("USD/GiB", [(2.0**-30, "")]),
}


_SI = {"time": "s", "bytes": "B", "bandwidth": "B/s", "energy": "J", "energy_per_bit": "J/bit", "frequency": "Hz",
       "power": "W", "area": "m^2", "ops_rate": "/ s", "money_per_byte": "USD/B"}


def _exact(value: float, dimension: str, scale: float, unit: str) -> str | None:
    """The shortest '<mantissa> <unit>' that parses back to exactly `value`, or None."""
    import numpy as np

    for digits in range(1, 18):
        mantissa = float(f"{value / scale:.{digits}g}")
        shown = (np.format_float_positional(mantissa, trim="-") if mantissa == 0 or 1e-4 <= abs(mantissa) < 1e6
                 else f"{mantissa:g}")
        text = f"{shown} {unit}"
        if parse(text, dimension) == value:
            return text
    return None


def format_quantity(value: float, dimension: str) -> str:
    """The shortest text that parses back to exactly `value`: '4 us', '4 KiB', '5 MB', '4.8 GB/s', '3 pJ/bit',
    '0.1478 mm^2', '0.72 USD/GiB' (sizes in binary prefixes when whole, else decimal ones). Of the prefix
    whose mantissa is >= 1 and its two neighbours, the shortest exact text wins ('1664 B', not '1.664 kB';
    '0.1 us', as pint's parse of '0.1 us' is not 100 ns to the last bit)."""
    if dimension == "bytes":
        binary = [(k, p) for k, p in _BINARY if value >= k and value % k == 0 and (k > 1 or value < 1024)]
        unit, table = "B", binary[:1] or _DECIMAL
    else:
        unit, table = _FORMATS[dimension]
    if value == 0:  # the unit without a prefix ('0 B', '0 J'), or the table's one unit ('0 mm^2')
        k, prefix = next(((k, p) for k, p in table if k == 1.0), table[0])
        return f"0 {prefix}{unit}"
    fits = [i for i, (k, _) in enumerate(table) if abs(value) >= k]
    first = fits[0] if fits else len(table) - 1
    texts = [(len(t), i != first, t) for i in range(max(0, first - 1), min(len(table), first + 2))
             if (t := _exact(value, dimension, table[i][0], table[i][1] + unit)) is not None]
    if not texts:  # a prefix's scaling rounds the last bit: the SI unit itself reads back exactly
        return f"{value!r} {_SI[dimension]}"
    return min(texts)[2]
