"""Unit strings -> SI floats (kvnand.config.units): exact values, KB vs KiB, and clear errors for bad input."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnand.config.units import DIMENSIONS, UnitParseError, parse

GOOD = [
    ("4 us", "time", 4e-6),
    ("75 us", "time", 75e-6),
    ("3 ms", "time", 3e-3),
    ("4 KiB", "bytes", 4096.0),
    ("4 KB", "bytes", 4000.0),
    ("4 kB", "bytes", 4000.0),
    ("448 B", "bytes", 448.0),
    ("5 MB", "bytes", 5e6),
    ("2 GiB", "bytes", 2 * 2**30),
    ("132.75 Gibit", "bytes", 132.75 * 2**30 / 8),
    ("4.8 GB/s", "bandwidth", 4.8e9),
    ("14.6 Gbit/s", "bandwidth", 14.6e9 / 8),
    ("4 MiB/s", "bandwidth", 4 * 2**20),
    ("3 pJ/bit", "energy_per_bit", 3e-12),
    ("98 nJ", "energy", 98e-9),
    ("400 MHz", "frequency", 4e8),
    ("6.98 mW", "power", 6.98e-3),
    ("0.0737 mm^2", "area", 0.0737e-6),
    ("0.0737 mm**2", "area", 0.0737e-6),
    ("32 TOPS", "ops_rate", 32e12),
    ("2e12 / s", "ops_rate", 2e12),
    ("$0.72/GB", "money_per_byte", 0.72e-9),
    ("0.52 USD/GB", "money_per_byte", 0.52e-9),
]


@pytest.mark.parametrize(("text", "dimension", "expected"), GOOD, ids=[g[0] for g in GOOD])
def test_parses_to_si(text, dimension, expected):
    assert parse(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_kilo_is_decimal_and_kibi_binary_exactly():
    assert parse("4 KiB", "bytes") == 4096
    assert parse("4 KB", "bytes") == 4000
    assert parse("1 Kib", "bytes") == 128  # kibibit
    assert parse("1 kbit", "bytes") == 125


BAD_DIMENSION = [
    ("4 KiB", "time"), ("4 us", "bytes"), ("400 MHz", "bandwidth"), ("32 TOPS", "bandwidth"),
    ("4.8 GB/s", "ops_rate"), ("3 pJ", "energy_per_bit"), ("3 pJ/bit", "energy"), ("1 W", "energy"),
    ("1 mm", "area"), ("0.72 USD", "money_per_byte"), ("3 degC", "time"), ("1 s s", "time"),
]


@pytest.mark.parametrize(("text", "dimension"), BAD_DIMENSION)
def test_wrong_dimension_says_what_is_allowed(text, dimension):
    with pytest.raises(UnitParseError) as ei:
        parse(text, dimension)
    msg = str(ei.value)
    assert "wrong dimension" in msg or "cannot read" in msg
    assert f"expected {DIMENSIONS[dimension][1]}" in msg
    assert ei.value.allowed == DIMENSIONS[dimension][1]


@pytest.mark.parametrize("value", [4, 4.0, 0, "4", " 17 ", "1e3"])
def test_bare_number_has_no_unit(value):
    with pytest.raises(UnitParseError) as ei:
        parse(value, "time")
    assert "unit" in str(ei.value) and "expected a time" in str(ei.value)


GARBAGE = ["", "   ", "us", "four us", "4 furlongs_per_quack", "((", "4 us)", "4 s/", "4 m**", "nan s", "inf s",
           "1e400 s", "1 / 0 s", "__import__('os').system('true')", "4 us; rm -rf /", "[4 us]", "4\x00 us",
           "9**9**9 s", "4 s**99**99", "2**100000 s", "\u00e9\u00e9 s", "4 $"]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_is_a_unit_parse_error(text):
    t0 = time.perf_counter()
    with pytest.raises(UnitParseError) as ei:
        parse(text, "time")
    assert time.perf_counter() - t0 < 2, "the parser must not evaluate arbitrary arithmetic"
    assert "expected a time such as '4 us'" in str(ei.value)


@pytest.mark.parametrize("value", [None, True, False, {"a": 1}, [1, 2], (1,), b"4 us", object()])
def test_non_string_values_are_errors_not_crashes(value):
    with pytest.raises(UnitParseError) as ei:
        parse(value, "bytes")
    assert "expected a size" in str(ei.value)


def test_error_reason_omits_the_text_for_config_messages():
    with pytest.raises(UnitParseError) as ei:
        parse("4 KiB", "time")
    assert ei.value.reason == "wrong unit dimension"
    assert ei.value.problem == "'4 KiB' has the wrong dimension"


positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(positive)
def test_kib_and_kb_property(x):
    assert parse(f"{x} KiB", "bytes") == x * 1024
    assert parse(f"{x} KB", "bytes") == 1000 * x


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30), st.sampled_from(sorted(DIMENSIONS)))
def test_random_text_never_escapes_as_another_exception(text, dimension):
    try:
        value = parse(text, dimension)
    except UnitParseError:
        return
    assert value == value and abs(value) != float("inf")


def test_quantities_read_before_do_not_start_pint(tmp_path):
    """A quantity pint has read is remembered in the user cache: another process reading it does not import
    pint; a memo written for another fingerprint, or not JSON, is ignored."""
    import json
    import subprocess
    import sys

    code = ("import sys; from kvnand.config.units import parse; v = parse('{q}', 'bytes'); "
            "print(v, 'pint' in sys.modules)")
    env = {**__import__("os").environ, "KVNAND_CACHE_DIR": str(tmp_path)}

    def run(q):
        out = subprocess.run([sys.executable, "-c", code.format(q=q)], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return float(out[0]), out[1] == "True"

    assert run("12 KiB") == (12288.0, True)     # first time: pint
    assert run("12 KiB") == (12288.0, False)    # remembered
    memo = tmp_path / "units.json"
    doc = json.loads(memo.read_text())
    memo.write_text(json.dumps({**doc, "fingerprint": "another", "values": {"bytes\t12 KiB": 1.0}}))
    assert run("12 KiB") == (12288.0, True)
    memo.write_text("{not json")
    assert run("12 KiB") == (12288.0, True)
    assert json.loads(memo.read_text())["values"]["bytes\t12 KiB"] == 12288.0
