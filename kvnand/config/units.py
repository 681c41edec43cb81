"""Unit strings -> SI floats, parsed once at the config boundary with pint.

"4 us" -> 4e-6, "4 KiB" -> 4096, "4 KB" -> 4000, "4.8 GB/s" -> 4.8e9, "3 pJ/bit" -> 3e-12 (J per bit),
"400 MHz" -> 4e8, "0.0737 mm^2" -> 7.37e-8 (m^2). Bytes are the unit of information (bit = 1/8 B).
pint is imported lazily: it is the slowest import of the package.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

# "KB", "Gb", "KiB", "MBps"-free forms: B = byte, b/bit = bit, K (no i) = kilo. pint alone reads "KB" as kelvin-byte.
_INFO = re.compile(r"(?<![A-Za-z])([kKMGTPE]?)(i?)(B|b|bits?|bytes?)(?![A-Za-z])")


def _normalize_info_units(s: str) -> str:
    def fix(m: re.Match) -> str:
        prefix, binary, unit = m.groups()
        if prefix == "K" and not binary:
            prefix = "k"
        if prefix == "k" and binary:
            prefix = "K"
        name = "byte" if unit.startswith("B") or unit.startswith("byte") else "bit"
        return f"{prefix}{binary}{name}"

    return _INFO.sub(fix, s)

# dimension name -> (pint unit the SI float is expressed in, human description)
DIMENSIONS: dict[str, tuple[str, str]] = {
    "time": ("second", "a time such as '4 us' or '75 us'"),
    "bytes": ("byte", "a size such as '4 KiB', '16 KB' or '5 MB'"),
    "bandwidth": ("byte / second", "a rate such as '4.8 GB/s' or '14.6 Gbit/s'"),
    "energy": ("joule", "an energy such as '98 nJ'"),
    "energy_per_bit": ("joule / bit", "an energy per bit such as '3 pJ/bit'"),
    "frequency": ("hertz", "a frequency such as '400 MHz'"),
    "power": ("watt", "a power such as '4.6 W' or '6.98 mW'"),
    "area": ("meter ** 2", "an area such as '0.0737 mm^2'"),
    "ops_rate": ("1 / second", "an operation rate such as '32 TOPS' or '2e12 / s'"),
    "money_per_byte": ("1 / byte", "a price per size such as '0.52 USD/GB'"),
}


@cache
def _registry():
    import pint

    ureg = pint.UnitRegistry(non_int_type=float)
    # Information units: pint's byte/bit already exist; KiB etc. come from binary prefixes.
    ureg.define("USD = [currency]")
    ureg.define("OPS = 1 / second")  # operations per second (TOPS = 1e12 OPS)
    ureg.define("FLOPS = 1 / second")
    return ureg


class UnitParseError(ValueError):
    pass


@lru_cache(maxsize=4096)
def parse(text: str | int | float, dimension: str) -> float:
    """Parse a quantity into the SI float of `dimension`; raise UnitParseError with what is allowed."""
    unit, desc = DIMENSIONS[dimension]
    if isinstance(text, bool):
        raise UnitParseError(f"expected {desc}")
    if isinstance(text, (int, float)):
        raise UnitParseError(f"a bare number has no unit; expected {desc}")
    s = _normalize_info_units(str(text).strip().replace("^", "**"))
    if dimension == "money_per_byte":
        s = s.replace("$", "USD ")
    try:
        q = _registry().Quantity(s)
    except Exception as exc:  # pint raises many types for garbage
        raise UnitParseError(f"cannot parse '{text}' as a quantity ({type(exc).__name__}); expected {desc}") from None
    target = _registry().Unit(unit) if dimension != "money_per_byte" else _registry().Unit("USD / byte")
    try:
        value = float(q.to(target).magnitude)
    except Exception:
        raise UnitParseError(f"'{text}' has the wrong dimension; expected {desc}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UnitParseError(f"'{text}' is not finite; expected {desc}")
    return value
