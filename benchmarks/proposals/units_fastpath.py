"""Proposal for kvnand/config/units.py: read the common quantity forms without pint.

pint is the slowest part of a cold start (import ~0.5 s + UnitRegistry() ~0.6 s of CPU on the 2-core box;
~40 % of a cold `kvnand report`). Every preset quantity has the simple shape NUMBER [PREFIX]UNIT[**N]
[(*|/) [PREFIX]UNIT[**N]]...; this reads exactly that shape with a table of SI/binary prefixes and the
handful of units the schema's dimensions use, and returns None for anything else, so pint (and every error
message) stays as it is for everything unusual. Values agree with pint to ~1e-16 relative (float rounding of
the prefix product), far inside the 1e-9 behaviour tolerance.

The change (in kvnand/config/units.py, function `_parse_str`, right after the `_check_shape` test):

        problem = _check_shape(s)
        if problem:
            raise UnitParseError(...)
    +   value = _fast_quantity(s, dimension)      # the code below, moved into units.py
    +   if value is not None:
    +       return value
        try:
            q = _registry().Quantity(s)

`python -m benchmarks.proposals.units_fastpath` checks it against pint on every quantity of the presets and
on a generated set (all prefixes x units x dimensions, including wrong dimensions that must fall back).
"""

from __future__ import annotations

import math
import re

_BIT, _BYTE = "INFOBIT", "INFOBYTE"  # as in kvnand/config/units.py (info units are rewritten to these)

# unit -> (factor to the base, dimension exponents); base units: s, m, kg, bit, USD
_T, _L, _M, _I, _C = "s", "m", "kg", "bit", "USD"
_UNITS: dict[str, tuple[float, dict[str, int]]] = {
    "s": (1.0, {_T: 1}), "second": (1.0, {_T: 1}), "seconds": (1.0, {_T: 1}),
    "m": (1.0, {_L: 1}), "meter": (1.0, {_L: 1}), "metre": (1.0, {_L: 1}),
    "J": (1.0, {_M: 1, _L: 2, _T: -2}), "joule": (1.0, {_M: 1, _L: 2, _T: -2}),
    "W": (1.0, {_M: 1, _L: 2, _T: -3}), "watt": (1.0, {_M: 1, _L: 2, _T: -3}),
    "Hz": (1.0, {_T: -1}), "hertz": (1.0, {_T: -1}),
    "OPS": (1.0, {_T: -1}), "FLOPS": (1.0, {_T: -1}),
    _BIT: (1.0, {_I: 1}), _BYTE: (8.0, {_I: 1}),
    "USD": (1.0, {_C: 1}),
}
_PREFIXABLE = ("s", "m", "J", "W", "Hz", "OPS", "FLOPS", _BIT, _BYTE)
_SI = {"Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3, "h": 1e2, "da": 1e1,
       "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "\u00b5": 1e-6, "\u03bc": 1e-6, "n": 1e-9, "p": 1e-12,
       "f": 1e-15, "a": 1e-18, "z": 1e-21, "y": 1e-24}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
# target of each dimension: (factor of the target unit, its dimension exponents)
_TARGETS = {
    "time": (1.0, {_T: 1}), "bytes": (8.0, {_I: 1}), "bandwidth": (8.0, {_I: 1, _T: -1}),
    "energy": (1.0, {_M: 1, _L: 2, _T: -2}), "energy_per_bit": (1.0, {_M: 1, _L: 2, _T: -2, _I: -1}),
    "frequency": (1.0, {_T: -1}), "power": (1.0, {_M: 1, _L: 2, _T: -3}), "area": (1.0, {_L: 2}),
    "ops_rate": (1.0, {_T: -1}), "money_per_byte": (1.0 / 8.0, {_C: 1, _I: -1}),
}
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_TOKEN = re.compile(r"\s*(\*\*|\*|/|[A-Za-z_\u00b5\u03bc][A-Za-z_\u00b5\u03bc]*|[+-]?\d+)")


def _unit(name: str) -> tuple[float, dict[str, int]] | None:
    if name in _UNITS:
        return _UNITS[name]
    for base in _PREFIXABLE:
        if name.endswith(base) and len(name) > len(base):
            prefix = name[: -len(base)]
            factor = _SI.get(prefix)
            if factor is None and base in (_BIT, _BYTE):
                factor = _BINARY.get(prefix)
            if factor is not None:
                f, dims = _UNITS[base]
                return factor * f, dims
    return None


def fast_quantity(s: str, dimension: str) -> float | None:
    """The SI float of `s` (already normalized as _parse_str does) if it has the simple shape, else None.

    Shape: NUMBER then terms [*|/] UNIT [** INT] (a missing operator multiplies, as pint does)."""
    target = _TARGETS.get(dimension)
    m = _NUMBER.match(s)
    if target is None or m is None:
        return None
    value = float(m.group(1))
    dims: dict[str, int] = {}
    tokens = []
    pos, end = m.end(), len(s.rstrip())
    while pos < end:
        t = _TOKEN.match(s, pos)
        if t is None:
            return None
        tokens.append(t.group(1))
        pos = t.end()
    i = 0
    while i < len(tokens):
        op = 1
        if tokens[i] in ("*", "/"):
            op = 1 if tokens[i] == "*" else -1
            i += 1
        if i >= len(tokens):
            return None
        u = _unit(tokens[i])
        if u is None:
            return None
        i += 1
        power = 1
        if i < len(tokens) and tokens[i] == "**":
            if i + 1 >= len(tokens) or not tokens[i + 1].lstrip("+-").isdigit():
                return None
            power = int(tokens[i + 1])
            i += 2
        e = op * power
        f, d = u
        value = value * f**e if e > 0 else value / f ** (-e)
        for k, v in d.items():
            dims[k] = dims.get(k, 0) + v * e
    dims = {k: v for k, v in dims.items() if v}
    factor, want = target
    if dims != want:
        return None  # wrong or missing dimension: pint says so, in its words
    value = value / factor
    return value if math.isfinite(value) else None


def install() -> None:
    """Put the fast path in front of kvnand.config.units._parse_str (for measuring the proposal)."""
    from kvnand.config import units

    original = units._parse_str

    def parse_str(text: str, dimension: str) -> float:
        s = text.strip().replace("^", "**")
        if dimension != "money_per_byte" or not s.startswith("$"):
            s = units._normalize_info_units(s)
            if units._check_shape(s) is None:
                v = fast_quantity(s, dimension)
                if v is not None:
                    return v
        return original(text, dimension)

    units._parse_str = parse_str


def main() -> int:
    """Compare with pint on every preset quantity and a generated set; report the mismatches."""
    from kvnand.config import units
    from kvnand.config.loader import load_system, system_names

    seen: dict[tuple[str, str], float] = {}
    original = units._parse_str

    def spy(text, dim):
        v = original(text, dim)
        seen[(text, dim)] = v
        return v

    units._parse_str = spy
    for n in system_names():
        load_system(n, {})
    units._parse_str = original
    generated = []
    for dim, unit in (("time", "s"), ("energy", "J"), ("power", "W"), ("frequency", "Hz"), ("bytes", "B"),
                      ("bytes", "bit"), ("bandwidth", "B/s"), ("bandwidth", "bit/s"), ("energy_per_bit", "J/bit"),
                      ("ops_rate", "OPS"), ("area", "m^2"), ("money_per_byte", "USD/B")):
        for prefix in ("", "k", "K", "M", "G", "T", "m", "u", "n", "p", "Ki", "Mi", "Gi", "da", "h", "c"):
            generated.append((f"3.7 {prefix}{unit}", dim))
            generated.append((f"12 {prefix}{unit}", "time" if dim != "time" else "power"))  # wrong dimension
    generated += [("256e9 / s", "ops_rate"), ("1 / ms", "frequency"), ("5 mm ** 2", "area"), ("2 J s", "energy"),
                  ("4 min", "time"), ("3 h", "time"), ("7 dB", "bytes"), ("1 kJ/s", "power"), ("2 W*s", "energy")]
    bad, fast_hits, total = [], 0, 0
    for (text, dim) in list(seen) + generated:
        total += 1
        try:
            ref = units._parse_str(text, dim)
        except units.UnitParseError:
            ref = None
        s = units._normalize_info_units(text.strip().replace("^", "**"))
        got = fast_quantity(s, dim) if units._check_shape(s) is None else None
        if got is None:
            continue
        fast_hits += 1
        if ref is None or abs(got - ref) > 1e-12 * abs(ref):
            bad.append((text, dim, ref, got))
    print(f"{total} quantities ({len(seen)} from the presets): fast path read {fast_hits}, "
          f"{len(bad)} disagree with pint")
    for b in bad:
        print("  MISMATCH", b)
    missed = [k for k in seen if fast_quantity(units._normalize_info_units(k[0].strip().replace("^", "**")),
                                               k[1]) is None]
    print(f"preset quantities left to pint: {missed}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
