"""Configuration: presets, `extends` + deep merge, `{preset: ...}`, `--set`, and one clear message per bad input.

Every bad config must produce one InputError naming the file, the key path (and the YAML line where known),
the bad value and what is allowed; the CLI turns it into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.config import units
from kvnand.config.loader import (
    SHORT_KEYS,
    apply_overrides,
    load_system,
    read_yaml,
    resolve_system_tree,
    system_names,
    validate_tree,
)
from kvnand.config.schema import Calibration, System
from kvnand.errors import InputError
from kvnand.paths import CONFIG_ROOT

KVNAND = Path(sys.executable).parent / "kvnand"
SHIPPED = ["kvnand-c16", "kvnand-d", "base1", "base2", "cambricon-llm-s", "cambricon-llm-m", "cambricon-llm-l",
           "csd-offload"]
HEAD = "schema_version: 1\nextends: kvnand-c16\nname: x\n"  # 3 lines: the bad part starts on line 4


def dump(system) -> dict:
    return system.model_dump()


# ------------------------------------------------------------------------------------------ shipped presets
def test_system_names_cover_design_md():
    assert set(SHIPPED) <= set(system_names())


@pytest.mark.parametrize("name", system_names())
def test_every_shipped_system_loads(name):
    s = load_system(name)
    assert isinstance(s, System)
    assert s.name == name
    assert load_system(str(CONFIG_ROOT / "systems" / f"{name}.yaml")).name == name


def test_shipped_ifc_die_geometry_is_132_75_gibit():
    g = load_system("kvnand-c16").flash.die.geometry
    assert g.page_size * g.pages_per_block * g.blocks_per_plane * g.planes * 8 == 132.75 * 2**30


# ------------------------------------------------------------------------------------------ extends, presets
def test_extends_changes_only_what_it_states(tmp_path):
    f = tmp_path / "slow-read.yaml"
    f.write_text("schema_version: 1\nextends: kvnand-c16\nname: slow-read\nflash:\n  die:\n    cell:\n"
                 "      tR: 10 us\n")
    base, derived = dump(load_system("kvnand-c16")), dump(load_system(str(f)))
    assert derived["flash"]["die"]["cell"]["tR"] == pytest.approx(10e-6)
    assert base["flash"]["die"]["cell"]["tR"] == pytest.approx(4e-6)
    derived["flash"]["die"]["cell"]["tR"] = base["flash"]["die"]["cell"]["tR"]
    derived["name"] = base["name"]
    assert derived == base  # everything else (siblings of tR, the rest of the die, other parts) inherited


def test_extends_by_relative_path_and_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("schema_version: 1\nextends: kvnand-d\nname: a\nkv:\n  g2_dies: 4\n")
    (tmp_path / "b.yaml").write_text("schema_version: 1\nextends: a.yaml\nname: b\nflash:\n  channels: 4\n")
    s = load_system(str(tmp_path / "b.yaml"))
    assert (s.name, s.kv.g2_dies, s.flash.channels, s.kv.store) == ("b", 4, 4, "flash_group")
    assert s.schedule.hg_pipeline is True  # from kvnand-d


def test_preset_with_local_overrides(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "flash:\n  die: {preset: kvnand-ifc-die, cell: {tPROG: 100 us}, t_register: 0.2 us}\n")
    s, base = load_system(str(f)), load_system("kvnand-c16")
    assert s.flash.die.cell.tPROG == pytest.approx(100e-6)
    assert s.flash.die.t_register == pytest.approx(0.2e-6)
    assert s.flash.die.cell.tR == base.flash.die.cell.tR  # the rest of the preset
    assert s.flash.die.geometry == base.flash.die.geometry


def test_preset_in_a_derived_file_replaces_the_base_part(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "flash:\n  die: {preset: lincoln-die}\n")
    s = load_system(str(f))
    assert s.flash.die.name == "lincoln-die"
    assert s.flash.die.cell.tR == pytest.approx(3.4e-6)  # not kvnand-ifc-die's 4 us merged over it


def test_geometry_cross_check_accepts_a_consistent_capacity(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text(HEAD + "flash:\n  die:\n    geometry:\n      capacity: 132.75 Gibit\n")
    assert load_system(str(f)).flash.die.geometry.capacity == 132.75 * 2**30 / 8
    f2 = tmp_path / "g2.yaml"
    f2.write_text(HEAD + "flash:\n  die:\n    geometry:\n      planes: 16\n      capacity: 66.375 Gibit\n")
    assert load_system(str(f2)).flash.die.geometry.planes == 16


# ------------------------------------------------------------------------------------------ --set
@pytest.mark.parametrize(("key", "value", "path", "expected"), [
    ("dies", "32", "flash.dies_per_channel", 4),
    ("g2_dies", "3", "kv.g2_dies", 3),
    ("channels", "16", "flash.channels", 16),
    ("planes_per_die", "16", "flash.die.geometry.planes", 16),
    ("page_size", "16 KiB", "flash.die.geometry.page_size", 16384.0),
    ("fmacs_per_plane", "64", "flash.logic.fmacs_per_plane", 64),
    ("flash.die.cell.tR", "3 us", "flash.die.cell.tR", 3e-6),
    ("npu.peak_ops.bf16", "64 TOPS", "npu.peak_ops.bf16", 64e12),
    ("schedule.hg_pipeline", "false", "schedule.hg_pipeline", False),
    ("kv.buffer.size", "10 MB", "kv.buffer.size", 10e6),
])
def test_set_short_keys_and_dotted_paths(key, value, path, expected):
    s = dump(load_system("kvnand-d", {key: value}))
    node = s
    for part in path.split("."):
        node = node[part]
    assert node == pytest.approx(expected) if isinstance(expected, float) else node == expected
    assert dump(load_system("kvnand-d")) != s


def test_short_keys_are_the_documented_ones():
    assert {"g2_dies", "channels", "planes_per_die", "page_size", "fmacs_per_plane"} <= set(SHORT_KEYS)


@given(st.sampled_from(["kvnand-c16", "kvnand-d", "base1", "base2"]),
       st.sampled_from(["1 KiB", "2 KiB", "4 KiB", "8 KiB", "16 KiB", "32 KiB", "64 KiB"]))
@settings(max_examples=30, deadline=None)
def test_page_size_short_key_holds_die_capacity_and_cost(system, page):
    """`page_size` changes the page, not what the memory holds or costs: pages per block shrink as the page
    grows, blocks per plane stay, and the spare area keeps its bytes per page byte (its ECC parity)."""
    from kvnand import cost

    base, new = load_system(system), load_system(system, {"page_size": page})
    g0, g = base.flash.die.geometry, new.flash.die.geometry
    assert g.page_size == units.parse(page, "bytes")
    assert g.die_bytes == g0.die_bytes and g.blocks_per_plane == g0.blocks_per_plane
    assert g.page_size * g.pages_per_block == g0.page_size * g0.pages_per_block
    assert g.spare_size / g.page_size == g0.spare_size / g0.page_size
    assert cost.memory_cost(system, {"page_size": page}) == cost.memory_cost(system)


def test_page_size_short_key_refuses_a_page_that_does_not_divide_the_block():
    with pytest.raises(InputError, match="page_size holds die capacity") as exc:
        load_system("kvnand-c16", {"page_size": "5 KiB"})
    assert exc.value.key == "page_size" and "'8 KiB'" in exc.value.allowed


@pytest.mark.parametrize(("overrides", "key", "words"), [
    # the dotted path changes the page alone: a 16 KiB page with a 4 KiB page's 448 B spare cannot hold the
    # parity of its 16 BCH codewords (16 x 112 B)
    ({"flash.die.geometry.page_size": "16 KiB"}, "flash.die.geometry.spare_size", ["1792 B"]),
    ({"flash.die.geometry.page_size": "3 KiB"}, "flash.die.geometry.page_size", ["power of two", "2048 B or 4096 B"]),
    ({"flash.ecc.codeword_data": "3 KiB", "flash.ecc.codeword_parity": "336 B"}, "flash.die.geometry.page_size",
     ["1.333 ECC codewords", "3072 B"]),
    ({"planes_per_die": 3}, "flash.die.geometry.planes", ["1 or an even number"]),
    ({"flash.die.cell.mode": "TLC"}, "flash.die.geometry.partial_programs_per_page", ["TLC", "commodity-tlc"]),
    ({"flash.die.cell.mode": "TLC", "flash.die.geometry.partial_programs_per_page": 1}, "flash.die.cell.tR",
     ["4e-06 s is not a TLC value"]),
])
def test_impossible_geometry_and_mislabelled_cells_are_refused(overrides, key, words):
    with pytest.raises(InputError) as exc:
        load_system("kvnand-c16", overrides)
    assert exc.value.key == key, exc.value
    for w in words:
        assert w in str(exc.value), exc.value


def test_shipped_dies_agree_with_their_cell_mode_and_code():
    """Every shipped die passes the checks (the Cambricon die's 1664 B spare holds its controller code's parity;
    TLC dies program a page once)."""
    from kvnand.config.schema import CELL_MODES

    for name in system_names():
        s = load_system(name)
        for array in (s.flash, s.nand):
            if array is None:
                continue
            g, ecc = array.die.geometry, array.ecc
            assert g.spare_size >= g.page_size / ecc.codeword_data * ecc.codeword_parity, name
            assert g.partial_programs_per_page <= CELL_MODES[array.die.cell.mode].nop_max, name


def test_dies_keeps_channels_and_is_applied_after_them():
    s = load_system("kvnand-d", {"dies": "8", "channels": "2", "g2_dies": "3"})
    assert (s.flash.channels, s.flash.dies_per_channel, s.flash.dies, s.kv.g2_dies) == (2, 4, 8, 3)


def test_apply_overrides_does_not_touch_the_input_tree():
    tree, src = resolve_system_tree("kvnand-c16")
    out = apply_overrides(tree, {"channels": "2"}, src.default_file)
    assert out["flash"]["channels"] == 2 and tree["flash"]["channels"] == 8


def test_calibration_reaches_cambricon_and_set_wins():
    assert load_system("cambricon-llm-s").flash.logic.core_rate > 0
    assert load_system("cambricon-llm-s", {"flash.logic.core_rate": "1e9 / s"}).flash.logic.core_rate == 1e9


# ------------------------------------------------------------------------------------------ bad configs
@dataclass
class Bad:
    id: str
    files: dict  # name -> str (YAML text) | bytes | None (a directory)
    target: str = "bad.yaml"  # a file in tmp, or a preset name
    sets: tuple = ()
    key: str | None = None
    line: int | None = None  # checked as 'FILE:LINE,' in the message
    value: str | None = None  # checked as '(got VALUE' in the message
    allowed: str = ""  # checked after '; allowed: '
    detail: str = ""  # checked anywhere in the message
    in_file: str | None = None  # the file named (default: target)


C16_DIE = "flash:\n  die:\n"  # lines 4-5 after HEAD
BAD = [
    Bad("unknown_key_top", {"bad.yaml": HEAD + "bogus: 1\n"}, key="bogus", line=4, value="1",
        allowed="flash, nand", detail="unknown key"),
    Bad("unknown_key_nested", {"bad.yaml": HEAD + C16_DIE + "    geometry:\n      bogus: 1\n"},
        key="flash.die.geometry.bogus", line=7, value="1", allowed="pages_per_block", detail="unknown key"),
    Bad("unknown_key_in_device_preset",
        {"dev.yaml": "schema_version: 1\nextends: kvnand-ifc-die\nname: d\nspeed: 3\n",
         "bad.yaml": HEAD + "flash:\n  die: {preset: dev.yaml}\n"},
        key="flash.die.speed", line=4, value="3", allowed="geometry", in_file="dev.yaml"),
    Bad("wrong_unit_dimension", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: 4 KiB\n"},
        key="flash.die.cell.tR", line=7, value="'4 KiB'", allowed="a time such as '4 us'", detail="dimension"),
    Bad("bare_number_for_unit_field", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: 4\n"},
        key="flash.die.cell.tR", line=7, value="4", allowed="a time", detail="no unit"),
    Bad("quoted_bare_number", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: '4'\n"},
        key="flash.die.cell.tR", line=7, value="'4'", allowed="a time", detail="no unit"),
    Bad("bool_for_unit_field", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: true\n"},
        key="flash.die.cell.tR", line=7, value="True", allowed="a time"),
    Bad("mapping_for_unit_field", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: {value: 4}\n"},
        key="flash.die.cell.tR", line=7, allowed="a time", detail="not a quantity"),
    Bad("garbage_quantity", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: 9**9**9 s\n"},
        key="flash.die.cell.tR", line=7, value="'9**9**9 s'", allowed="a time", detail="not a quantity"),
    Bad("negative_size", {"bad.yaml": HEAD + C16_DIE + "    geometry:\n      page_size: -4 KiB\n"},
        key="flash.die.geometry.page_size", line=7, value="'-4 KiB'", allowed="1 B to 1 EiB"),
    Bad("zero_size", {"bad.yaml": HEAD + C16_DIE + "    geometry:\n      page_size: 0 KiB\n"},
        key="flash.die.geometry.page_size", line=7, value="'0 KiB'", allowed="1 B to 1 EiB"),
    Bad("zero_count", {"bad.yaml": HEAD + "flash:\n  channels: 0\n"},
        key="flash.channels", line=5, value="0", allowed="an integer 1 to 1024"),
    Bad("wrong_type_int", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      pe_cycles: many\n"},
        key="flash.die.cell.pe_cycles", line=7, value="'many'", allowed="an integer"),
    Bad("list_for_part", {"bad.yaml": HEAD + C16_DIE + "    cell: [1, 2]\n"},
        key="flash.die.cell", line=6, value="[1, 2]", allowed="tPROG", detail="expected a mapping"),
    Bad("malformed_yaml_indentation", {"bad.yaml": "schema_version: 1\n  name: x\n name2: y\n"},
        line=2, allowed="indentation", detail="malformed YAML"),
    Bad("malformed_yaml_unclosed_bracket", {"bad.yaml": HEAD + "flash:\n  channels: [1, 2\n"},
        line=6, allowed="closed brackets", detail="malformed YAML"),
    Bad("malformed_yaml_tab", {"bad.yaml": HEAD + "flash:\n\tchannels: 2\n"},
        line=5, allowed="no tabs", detail="malformed YAML"),
    Bad("malformed_yaml_unclosed_quote", {"bad.yaml": HEAD + "description: \"open\n"},
        allowed="quotes", detail="malformed YAML"),
    Bad("invalid_yaml_date", {"bad.yaml": HEAD + "description: 2001-02-30\n"},
        allowed="quote", detail="malformed YAML"),
    Bad("duplicate_key", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      tR: 4 us\n      tR: 5 us\n"},
        key="flash.die.cell.tR", line=8, allowed="each key once", detail="duplicate key"),
    Bad("top_level_list", {"bad.yaml": "- a\n- b\n"}, value="['a', 'b']", allowed="a YAML mapping",
        detail="expected a mapping"),
    Bad("top_level_scalar", {"bad.yaml": "just words\n"}, value="'just words'", allowed="a YAML mapping"),
    Bad("empty_file", {"bad.yaml": ""}, allowed="a YAML mapping", detail="empty"),
    Bad("comments_only_file", {"bad.yaml": "# nothing\n"}, allowed="a YAML mapping", detail="empty"),
    Bad("missing_schema_version", {"bad.yaml": "name: x\nextends: kvnand-c16\n"}, key="schema_version",
        allowed="schema_version: 1", detail="missing"),
    Bad("missing_schema_version_standalone", {"bad.yaml": "name: x\nnpu: {preset: npu-kvnand}\n"},
        key="schema_version", allowed="schema_version: 1", detail="missing"),
    Bad("wrong_schema_version", {"bad.yaml": "schema_version: 2\nextends: kvnand-c16\nname: x\n"},
        key="schema_version", line=1, value="2", allowed="1", detail="version"),
    Bad("missing_required_key", {"bad.yaml": "schema_version: 1\nname: x\nnpu: {preset: npu-kvnand}\n"
                                 "placement: {weights: host, attention: npu}\n"},
        key="kv", allowed="store", detail="required key is missing"),
    Bad("unknown_preset", {"bad.yaml": HEAD + "npu: {preset: nonexist}\n"}, key="npu.preset", line=4,
        allowed="npu-kvnand", detail="'nonexist'"),
    Bad("preset_not_a_name", {"bad.yaml": HEAD + "npu: {preset: [a]}\n"}, key="npu.preset", line=4,
        value="['a']", allowed="a device preset name"),
    Bad("unknown_extends_target", {"bad.yaml": "schema_version: 1\nextends: nonexist\nname: x\n"},
        key="extends", line=2, allowed="kvnand-c16", detail="'nonexist'"),
    Bad("extends_missing_file", {"bad.yaml": "schema_version: 1\nextends: gone/base.yaml\nname: x\n"},
        key="extends", line=2, value="'gone/base.yaml'", allowed="kvnand-c16", detail="no such system file"),
    Bad("extends_not_a_string", {"bad.yaml": "schema_version: 1\nextends: [kvnand-c16]\nname: x\n"},
        key="extends", line=2, value="['kvnand-c16']", allowed="preset name"),
    Bad("circular_extends", {"bad.yaml": "schema_version: 1\nextends: other.yaml\nname: x\n",
                             "other.yaml": "schema_version: 1\nextends: bad.yaml\nname: y\n"},
        key="extends", line=2, value="'bad.yaml'", allowed="ends in a file without 'extends'",
        detail="circular", in_file="other.yaml"),
    Bad("self_extends", {"bad.yaml": "schema_version: 1\nextends: bad.yaml\nname: x\n"},
        key="extends", line=2, allowed="ends in a file without 'extends'", detail="circular"),
    Bad("circular_preset", {"bad.yaml": HEAD + "flash:\n  die: {preset: loop.yaml}\n",
                            "loop.yaml": "schema_version: 1\nname: l\ncell: {preset: loop.yaml}\n"},
        key="flash.die.cell.preset", line=3, allowed="does not refer back", detail="circular", in_file="loop.yaml"),
    Bad("inconsistent_geometry", {"bad.yaml": HEAD + C16_DIE + "    geometry:\n      capacity: 100 Gibit\n"},
        key="flash.die.geometry.capacity", line=7, value="'1.34218e+10 B'", allowed="132.75 Gibit",
        detail="geometry inconsistent"),
    Bad("g2_dies_out_of_range", {"bad.yaml": "schema_version: 1\nextends: kvnand-d\nname: x\nkv:\n  g2_dies: 16\n"},
        key="kv.g2_dies", line=5, value="16", allowed="1 to 15"),
    Bad("g2_dies_zero", {"bad.yaml": "schema_version: 1\nextends: kvnand-d\nname: x\nkv:\n  g2_dies: 0\n"},
        key="kv.g2_dies", line=5, value="0", allowed="1 to 15"),
    Bad("kv_store_without_its_part", {"bad.yaml": HEAD + "kv:\n  store: dram\n"}, key="kv.store", line=5,
        value="'dram'", allowed="add a 'dram' part", detail="no 'dram' part"),
    Bad("weights_without_flash_logic", {"bad.yaml": HEAD + "placement:\n  weights: flash_split\n"
                                        "flash:\n  logic: null\n"},
        key="placement.weights", line=5, value="'flash_split'", allowed="host", detail="flash.logic"),
    Bad("unknown_literal", {"bad.yaml": HEAD + C16_DIE + "    cell:\n      mode: PLC\n"},
        key="flash.die.cell.mode", line=7, value="'PLC'", allowed="'SLC', 'MLC', 'TLC' or 'QLC'"),
    Bad("bad_set_path", {}, target="kvnand-d", sets=("flash.die.nope.x=1",), key="flash.die.nope.x",
        allowed="g2_dies", detail="--set path does not exist", in_file="kvnand-d.yaml"),
    Bad("bad_set_unknown_leaf", {}, target="kvnand-d", sets=("flash.die.speed=1",), key="flash.die.speed",
        value="1", allowed="geometry", detail="unknown key", in_file="--set flash.die.speed=1"),
    Bad("bad_set_value_type", {}, target="kvnand-d", sets=("channels=abc",), key="flash.channels",
        value="'abc'", allowed="an integer", in_file="--set channels=abc"),
    Bad("bad_set_unit", {}, target="kvnand-d", sets=("flash.die.cell.tR=3",), key="flash.die.cell.tR",
        value="3", allowed="a time such as", detail="no unit", in_file="--set flash.die.cell.tR=3"),
    Bad("set_g2_dies_out_of_range", {}, target="kvnand-d", sets=("g2_dies=16",), key="kv.g2_dies",
        value="16", allowed="1 to 15", in_file="--set g2_dies=16"),
    Bad("dies_not_multiple_of_channels", {}, target="kvnand-d", sets=("dies=17",), key="dies", value="17",
        allowed="8, 16, 24", detail="multiple of flash.channels", in_file="kvnand-d.yaml"),
    Bad("dies_on_system_without_flash", {}, target="csd-offload", sets=("dies=16",), key="dies", value="16",
        allowed="g2_dies", detail="no IFC flash", in_file="csd-offload.yaml"),
    Bad("yaml_alias_bomb", {"bad.yaml": HEAD + "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 8))},
        allowed="ordinary size", detail="expands to more than"),
    Bad("nesting_too_deep", {"bad.yaml": HEAD + "description: " + "[" * 150 + "]" * 150 + "\n"},
        line=4, allowed="YAML nested at most", detail="nested too deeply"),
    Bad("nesting_beyond_the_parser", {"bad.yaml": HEAD + "description: " + "[" * 700 + "]" * 700 + "\n"},
        allowed="YAML nested at most", detail="nested too deeply"),
    Bad("non_utf8_binary_file", {"bad.yaml": b"\xff\xfe\x00\x01binary\x80\x81"}, allowed="UTF-8",
        detail="not a UTF-8 text file"),
    Bad("nul_bytes_in_text", {"bad.yaml": b"schema_version: 1\x00\n"}, detail="malformed YAML",
        allowed="YAML"),
    Bad("directory_instead_of_file", {"bad.yaml": None}, allowed="system YAML file", detail="is a directory"),
    Bad("nonexistent_file", {}, target="missing.yaml", allowed="kvnand-c16", detail="no such system file"),
    Bad("unknown_system_name", {}, target="kvnand-x", key="system", allowed="kvnand-c16",
        detail="unknown system preset 'kvnand-x'", in_file="command line"),
]


def _materialize(case: Bad, tmp: Path) -> tuple[str, dict, str]:
    for name, content in case.files.items():
        p = tmp / name
        if content is None:
            p.mkdir()
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    target = str(tmp / case.target) if case.target.endswith(".yaml") else case.target
    overrides = dict(s.split("=", 1) for s in case.sets)
    return target, overrides, case.in_file or Path(case.target).name


def _check_message(case: Bad, msg: str, named: str):
    assert named in msg, f"file {named!r} not named: {msg}"
    if case.key:
        assert f"key '{case.key}'" in msg, msg
    if case.line:
        assert f"{named}:{case.line}," in msg or f"{named}:{case.line}:" in msg, msg
    if case.value is not None:
        assert f"(got {case.value}" in msg, msg
    assert "; allowed: " in msg, msg
    assert case.allowed in msg.split("; allowed: ", 1)[1], msg
    assert case.detail in msg, msg
    assert "Traceback" not in msg and "\n" not in msg.strip(), msg


def test_at_least_fifteen_kinds():
    assert len({c.id for c in BAD}) == len(BAD) >= 15


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_config_message(case, tmp_path):
    target, overrides, named = _materialize(case, tmp_path)
    with pytest.raises(InputError) as ei:
        load_system(target, overrides)
    _check_message(case, str(ei.value), named)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_config_cli_exits_2_in_process(case, tmp_path, monkeypatch, capsys):
    from kvnand.cli import main

    target, _, named = _materialize(case, tmp_path)
    argv = ["kvnand", "show-config", target, *itertools.chain.from_iterable(("--set", s) for s in case.sets)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as ei:
        main()
    err = capsys.readouterr().err
    assert ei.value.code == 2, err
    assert err.startswith("kvnand: error: ") and err.count("\n") == 1, err
    _check_message(case, err.removeprefix("kvnand: error: "), named)


SUBPROCESS_KINDS = ["wrong_unit_dimension", "malformed_yaml_tab", "non_utf8_binary_file", "directory_instead_of_file",
                    "bad_set_value_type"]


def test_bad_config_cli_subprocess_exit_2_without_traceback(tmp_path):
    cases = {c.id: c for c in BAD}
    procs = {}
    for kind in SUBPROCESS_KINDS:  # concurrently: each process pays the interpreter and pint start-up
        case = cases[kind]
        d = tmp_path / kind
        d.mkdir()
        target, _, named = _materialize(case, d)
        args = [str(KVNAND), "show-config", target, *itertools.chain.from_iterable(("--set", s) for s in case.sets)]
        procs[kind] = (subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), named)
    for kind, (p, named) in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (kind, err)
        assert "Traceback" not in err and out == "", (kind, err)
        assert err.startswith("kvnand: error: ") and err.count("\n") == 1, (kind, err)
        _check_message(cases[kind], err.removeprefix("kvnand: error: "), named)


def test_validation_errors_inside_lists_name_the_index(tmp_path):
    f = tmp_path / "cal.yaml"
    f.write_text("schema_version: 1\nconstants:\n  c:\n    value: 1.0\n    unit: s\n    meaning: m\n"
                 "    path: a.b\n    applies_to:\n      - kvnand-c16\n      - {x: 1}\n")
    from kvnand.config.loader import Source

    data, lines = read_yaml(f)
    src = Source(str(f))
    src.add("", str(f), lines)
    with pytest.raises(InputError) as ei:
        validate_tree(Calibration, data, src)
    msg = str(ei.value)
    assert "key 'constants.c.applies_to[1]'" in msg and f"{f}:8," in msg and "allowed: a string" in msg, msg


def test_first_error_of_many_is_reported_with_a_count(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(HEAD + "bogus: 1\nalso_bogus: 2\n")
    with pytest.raises(InputError, match=r"unknown key \(and 1 more problem\(s\)\)"):
        load_system(str(f))


# ------------------------------------------------------------------------------------------ fuzzing
_KEYS = ["schema_version", "extends", "name", "flash", "die", "cell", "tR", "geometry", "page_size", "preset",
         "kv", "store", "g2_dies", "npu", "peak_ops", "channels", "dies_per_channel", "placement", "weights"]
_SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12)
            | st.sampled_from(["4 us", "4 KiB", "3 pJ/bit", "SLC", "kvnand-c16", "kvnand-ifc-die", "-1 B", "1e400 s",
                               "dram", "flash_group", "../x.yaml", "/", "a\x00b", "$0.72/GB", "9**9**9 s"]))
_DOCS = st.recursive(_SCALARS, lambda ch: st.lists(ch, max_size=4)
                     | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8) | st.integers(-3, 3), ch,
                                       max_size=5), max_leaves=25)
_counter = itertools.count()
_C16_PATHS: list[tuple[str, ...]] = []


def _c16_paths() -> list[tuple[str, ...]]:
    if not _C16_PATHS:
        tree, _ = resolve_system_tree("kvnand-c16")

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    _C16_PATHS.append((*path, k))
                    walk(v, (*path, k))

        walk(tree, ())
    return _C16_PATHS


def _load_any(tmp: Path, content) -> None:
    p = tmp / f"fuzz{next(_counter)}.yaml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        load_system(str(p))
        r = kvnand.evaluate(str(p), "llama3.1-8b", 1000)  # what loads must also evaluate to a finite result
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    assert r["oom"] or all(math.isfinite(r[k]) and r[k] > 0 for k in ("latency_s", "tokens_per_s", "ttft_s"))


@st.composite
def _documents(draw):
    kind = draw(st.sampled_from(["random", "derived", "mutated"]))
    doc = draw(_DOCS)
    if kind == "derived":
        extra = doc if isinstance(doc, dict) else {"x": doc}
        doc = {"schema_version": 1, "extends": draw(st.sampled_from(["kvnand-c16", "kvnand-d", "base2"])),
               "name": "f", **{k: v for k, v in extra.items() if k not in ("schema_version", "extends")}}
    elif kind == "mutated":
        tree, _ = resolve_system_tree("kvnand-c16")
        path = draw(st.sampled_from(_c16_paths()))
        node = tree
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = doc
        doc = tree
    return yaml.safe_dump(doc, allow_unicode=True)


@pytest.mark.slow  # 200 generated YAML documents, each loaded from a file
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_fuzz_yaml_documents_only_raise_input_error(tmp_path_factory, text):
    _load_any(tmp_path_factory.mktemp("fuzz", numbered=True), text)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.text(alphabet=st.sampled_from(list("schema_version: 1\nextends{}[]-,'\"\t#&*!|>?%@` \\x")),
                         max_size=120)))
def test_fuzz_random_text_only_raises_input_error(tmp_path_factory, content):
    _load_any(tmp_path_factory.mktemp("fuzzt", numbered=True), content)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*SHORT_KEYS, "dies", "flash.die.cell.tR", "kv.store", "npu.peak_ops.bf16",
                                        "flash.die", "kv.buffer.size", "flash.channels"]) | st.text(max_size=15),
                       st.text(max_size=15) | st.sampled_from(["3 us", "16", "0", "-1", "[1, 2]", "{a: 1}", "null",
                                                               "true", "4 KiB", "1e999"]), max_size=3))
def test_fuzz_set_overrides_only_raise_input_error(overrides):
    """Loading AND evaluating: a configuration the schema accepts must give a finite, positive result."""
    try:
        load_system("kvnand-d", overrides)
        r = kvnand.evaluate("kvnand-d", "llama3.1-8b", 1000, overrides=overrides)
    except InputError as exc:
        assert "\n" not in str(exc).strip()
        return
    if not r["oom"]:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("latency_s", "energy_j_per_token", "ttft_s"))
