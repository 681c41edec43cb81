"""`kvnand show-config` writes a loadable system file: quantities with units that read back to the same
floats, so `show-config X > y.yaml && show-config y.yaml` prints the same; comment lines mark inherited,
overridden and calibrated values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnand.config import units
from kvnand.config.dump import render
from kvnand.config.loader import load_system, system_names, system_origins

KVNAND = Path(sys.executable).parent / "kvnand"


def _data_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


def _show(system: str, overrides: dict | None = None) -> str:
    return render(load_system(system, overrides), system_origins(system, overrides))


@pytest.mark.parametrize("system", system_names())
def test_every_shipped_system_round_trips(system, tmp_path):
    text = _show(system)
    f = tmp_path / f"{system}.yaml"
    f.write_text(text)
    assert load_system(str(f)) == load_system(system)  # the same floats, strings and flags
    assert _data_lines(_show(str(f))) == _data_lines(text)


def test_round_trip_through_the_cli_with_overrides(tmp_path):
    first = subprocess.run([str(KVNAND), "show-config", "kvnand-d", "--set", "page_size=16KiB", "--set",
                            "g2_dies=5"], capture_output=True, text=True, check=True).stdout
    f = tmp_path / "y.yaml"
    f.write_text(first)
    second = subprocess.run([str(KVNAND), "show-config", str(f)], capture_output=True, text=True, check=True).stdout
    assert _data_lines(second) == _data_lines(first)
    assert "page_size: 16 KiB" in first and "pages_per_block: 192" in first and "spare_size: 1792 B" in first
    assert "tR: 4 us" in first and "rate: 4.8 GB/s" in first and "usd_per_byte: 0.72 USD/GiB" in first


def test_provenance_comments():
    cambricon = _show("cambricon-llm-s", {"page_size": "8 KiB"}).splitlines()
    i = next(i for i, line in enumerate(cambricon) if line.strip().startswith("core_rate:"))
    assert cambricon[i - 1].strip() == "# calibrated: cambricon_core_rate (calibration.yaml)"
    i = next(i for i, line in enumerate(cambricon) if line.strip().startswith("page_size:"))
    assert cambricon[i - 1].strip() == "# overridden: --set page_size=8 KiB"
    assert any("set in systems/cambricon-llm-s.yaml over preset devices/lpddr5x.yaml" in line for line in cambricon)
    cxl = _show("cxl-kv").splitlines()
    assert cxl[cxl.index("flash:") - 1] == "# inherited from systems/base2.yaml"
    assert any(line.strip().startswith("# inherited from devices/bch-9088.yaml: codeword_data") for line in cxl)
    # a file's own values carry no comment
    assert not any(line.lstrip().startswith("#") for line in _show("kvnand-c16").splitlines()[:8])


@given(st.sampled_from(sorted(units.RANGES)), st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_format_quantity_reads_back_exactly(dimension, fraction):
    lo, hi, _ = units.RANGES[dimension]
    value = lo * (hi / lo) ** fraction  # log-uniform over the physical range
    if dimension == "bytes":
        value = float(round(value))
    text = units.format_quantity(value, dimension)
    assert units.parse(text, dimension) == value, text
    assert units.parse(units.format_quantity(0.0, dimension), dimension) == 0.0


@pytest.mark.parametrize(("text", "dimension"), [("4 us", "time"), ("0.1 us", "time"), ("4 KiB", "bytes"),
                                                 ("448 B", "bytes"), ("5 MB", "bytes"), ("4.8 GB/s", "bandwidth"),
                                                 ("3 pJ/bit", "energy_per_bit"), ("0.1478 mm^2", "area"),
                                                 ("0.72 USD/GiB", "money_per_byte"), ("400 MHz", "frequency")])
def test_format_quantity_writes_what_a_preset_writes(text, dimension):
    assert units.format_quantity(units.parse(text, dimension), dimension) == text
