"""Robustness of the command line against hostile environments and input: concurrent cold caches,
damaged cache files, strict JSON, bounds and strict types. The generated-input fuzzing is tests/fuzz.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _kvnand(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kvnand.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # six cold interpreter starts at once (~10 s on two cores)
def test_concurrent_cold_starts_share_the_unit_cache(tmp_path):
    """Several first runs at once must all succeed, and a truncated cache file must be rebuilt, not fatal."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "KVNAND_CACHE_DIR": str(tmp_path / "kc")}
    procs = [_kvnand("show-config", "kvnand-c16", env=env) for _ in range(6)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(code == 0 for code, _ in results), results
    pickles = list((tmp_path / "xdg").rglob("*.pickle"))
    assert pickles, "pint's disk cache was not used"
    for f in pickles:
        f.write_bytes(f.read_bytes()[:50])  # a run killed mid-write (before atomic writes) left this behind
    proc = _kvnand("show-config", "kvnand-c16", env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not [p for p in (tmp_path / "xdg").rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_point_cache_ignores_damaged_entries(tmp_path):
    from kvnand.study.cache import Cache

    c = Cache(tmp_path)
    c.dir.mkdir(parents=True)
    for key, text in {"a": "[1, 2]", "b": '{"x": ', "c": "null", "d": "[" * 100_000}.items():
        (c.dir / f"{key}.json").write_text(text)
        assert c.get(key) is None
    c.put("e", {"ok": 1})
    assert c.get("e") == {"ok": 1}
    assert sorted(p.name for p in Path(c.dir).iterdir()) == sorted(f"{k}.json" for k in "abcde")


# ---------------------------------------------------------------------------------------------------------
# One line, exit 2, nothing written: each of the reproductions
# ---------------------------------------------------------------------------------------------------------
def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _refused(result, *words):
    code, out, err = result
    assert code == 2, (code, out[-300:], err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvnand: error: "), err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("setting, words", [
    ("flash.logic.cores_per_die=0", ["cores_per_die", "flash_split"]),
    ("flash.logic.cores_per_die=-4", ["cores_per_die", "0 to 1024"]),
    ("npu.peak_ops={}", ["npu.peak_ops", "empty"]),
    ("npu.peak_ops.fp8=1 TOPS", ["fp8", "bf16"]),
    ("channels=true", ["flash.channels", "integer"]),
    ("channels='8'", ["flash.channels", "integer"]),
    ("hg_pipeline=1", ["hg_pipeline", "true or false"]),
    ("hg_pipeline='true'", ["hg_pipeline", "true or false"]),
    ("page_size=0.5 B", ["page_size", "1 B to 1 EiB"]),
    ("page_size=1 bit", ["page_size"]),
    ("flash.die.geometry.spare_size=0 B", ["spare_size", "ECC parity", "at least 448 B"]),
    ("flash.die.geometry.spare_size=512 B", []),
    ("flash.ecc.codeword_parity=1 MiB", ["codeword_parity", "codeword_data"]),
    ("flash.logic.pe_precision=int8", ["pe_precision", "unknown key"]),
    ("flash.channel.rate=1e-300 B/s", ["flash.channel.rate", "1 kB/s to 1 PB/s"]),
    ("flash.die.energy.read_per_bit=1e300 J/bit", ["read_per_bit", "1 uJ/bit"]),
    ("page_size=" + "1" * 400 + " B", ["page_size"]),
])
def test_bad_system_values_are_refused(kvnand_cli, setting, words):
    system = "cambricon-llm-s" if "cores_per_die=0" in setting else "kvnand-c16"
    result = kvnand_cli("report", "--systems", system, "--models", "llama3.1-8b", "--contexts", "1k",
                        "--format", "json", "--set", setting)
    if setting == "flash.die.geometry.spare_size=512 B":  # a valid change: evaluated, finite
        assert result[0] == 0, result[2]
        assert _strict(result[1])["results"][0]["latency_s"] > 0
        return
    _refused(result, *words)


def test_page_below_the_codeword_and_g2_dies_on_a_colocated_system(tmp_path, kvnand_cli):
    f = tmp_path / "small-page.yaml"
    f.write_text("schema_version: 1\nextends: kvnand-c16\nname: small-page\nflash:\n  die:\n    geometry:\n"
                 "      page_size: 16 B\n      spare_size: 0 B\n")
    _refused(kvnand_cli("show-config", str(f)), "small-page.yaml", "page_size", "codeword")
    _refused(kvnand_cli("show-config", "kvnand-c16", "--set", "g2_dies=3"), "kv.g2_dies", "flash_group")
    _refused(kvnand_cli("show-config", "kvnand-c16", "--set", "g2_dies=-3"), "kv.g2_dies")


def test_set_name_brings_the_calibration_of_that_name(kvnand_cli):
    from kvnand.config.loader import load_system

    plain = load_system("cambricon-llm-s")
    renamed = load_system("cambricon-llm-m", {"name": "cambricon-llm-s"})
    assert renamed.flash.logic.core_rate == plain.flash.logic.core_rate > 0


@pytest.mark.parametrize("setting, words", [
    ("profile.tokens_per_s=nan", ["profile.tokens_per_s", "finite"]),
    ("profile.years=nan", ["profile.years", "finite"]),
    ("refresh.read_fraction=inf", ["refresh.read_fraction", "finite"]),
    ("refresh.uber_target=2", ["refresh.uber_target", "1e-3"]),
    ("profile.hours_per_day=25", ["profile.hours_per_day", "24"]),
])
def test_reliability_refuses_non_finite_and_out_of_range_settings(kvnand_cli, setting, words):
    _refused(kvnand_cli("reliability", "--systems", "kvnand-c16", "--format", "json", "--set", setting), *words)


def test_reliability_json_is_standard_and_finite(kvnand_cli):
    code, out, err = kvnand_cli("reliability", "--systems", "kvnand-c16,kvnand-d", "--format", "json")
    assert code == 0, err
    for r in _strict(out)["results"]:
        assert r["lifetime_years"] is None or 0 < r["lifetime_years"] < 1e6


@pytest.mark.parametrize("argv, words", [
    (["report", "--contexts", "1" * 400], ["--contexts"]),
    (["report", "--contexts", "2000000000"], ["--contexts", "1e9"]),
    (["graph", "llama3.1-8b", "--context", "-5"], ["--context"]),
    (["models", "x" * 300], ["model"]),
])
def test_bad_numbers_and_names_on_the_command_line(kvnand_cli, argv, words):
    _refused(kvnand_cli(*argv), *words)


def test_model_config_json_edge_cases(tmp_path, kvnand_cli):
    from kvnand.workload.model import zoo_dir

    text = (zoo_dir() / "llama3.1-8b.json").read_text()
    (tmp_path / "bom.json").write_text("\ufeff" + text, encoding="utf-8")
    code, out, err = kvnand_cli("models", str(tmp_path / "bom.json"), "--format", "json")
    assert code == 0, err  # a byte-order mark is fine, as in YAML
    for name, damaged in {"bigint": text.replace('"vocab_size": 128256', '"vocab_size": ' + "9" * 5000),
                          "deep": text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                          "nan": text.replace('"rope_theta": 500000.0', '"rope_theta": NaN'),
                          "huge": text.replace('"num_hidden_layers": 32', '"num_hidden_layers": ' + "9" * 30)}.items():
        (tmp_path / f"{name}.json").write_text(damaged)
        _refused(kvnand_cli("models", str(tmp_path / f"{name}.json")), f"{name}.json")


def test_event_mode_refuses_a_program_too_large_to_unroll(tmp_path, kvnand_cli):
    """10^6 tiny layers: event mode says so at once (fast mode still answers)."""
    cfg = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 1,
           "num_key_value_heads": 1, "num_hidden_layers": 10**6, "vocab_size": 8, "max_position_embeddings": 4096}
    (tmp_path / "deep.json").write_text(json.dumps(cfg))
    args = ["report", "--systems", "kvnand-c16", "--models", str(tmp_path / "deep.json"), "--contexts", "1k",
            "--format", "json", "--no-cache"]
    _refused(kvnand_cli(*args, "--mode", "event"), "event mode", "tasks", "fast")
    code, out, err = kvnand_cli(*args)
    assert code == 0, err
    assert _strict(out)["results"][0]["latency_s"] > 0


def test_report_json_is_standard_even_for_extreme_values(kvnand_cli):
    code, out, err = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b", "--contexts", "1k",
                                "--format", "json", "--set", "flash.channel.rate=1 kB/s")
    assert code == 0, err
    r = _strict(out)["results"][0]
    assert r["latency_s"] > 1 and math.isfinite(r["energy_j_per_token"])


@pytest.mark.parametrize("option, target", [
    ("--out", "/proc/x"), ("--out", "afile"), ("--plot", "adir/x.png"), ("--trace", "adir"),
    ("--plot", "a" * 300 + ".png"), ("--trace", "afile/x.json"),
])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, kvnand_cli, option, target):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "x.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    _refused(kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b", "--contexts", "1k",
                        option, target), option)
    assert sorted(tmp_path.rglob("*")) == before


def test_graph_output_to_a_directory_or_proc(kvnand_cli):
    _refused(kvnand_cli("graph", "llama3.1-8b", "--output", "/tmp"), "--output", "directory")
    _refused(kvnand_cli("graph", "llama3.1-8b", "--output", "/proc/x"), "--output")


# ---------------------------------------------------------------------------------------------------------
# DSE spaces and runs: checked at load, before any trial
# ---------------------------------------------------------------------------------------------------------
SMOKE_EDITS = {
    "empty_workload": (("models: [llama3.1-8b]", "models: []"), "workload.models"),
    "bundle_system_not_a_name": (("C: {system: kvnand-c16}", "C: {system: 5}"), "choices.C.system"),
    "integer_precision_choices": (("precision: {choices: [w8a8, w4a16], default: w8a8}",
                                   "precision: {choices: [1, 2], default: 1}"), "parameters.precision"),
    "nan_constraint": (("power_w: {max: 30}", "power_w: {max: .nan}"), "constraints.power_w.max"),
    "nan_known_design": (("g2_dies: [1, 4, 7]", "g2_dies: [1, .nan]"), "known_designs[1].params.g2_dies"),
    "infinite_weight": (("{1k: 1, 10k: 1}", "{1k: .inf, 10k: 1}"), "workload.contexts"),
    "bool_context": (("contexts: {1k: 1, 10k: 1}", "contexts: [true]"), "workload.contexts[0]"),
    "seed_out_of_range": (("seed: 7", "seed: -1"), "study.seed"),
    "unknown_profile": (("profile: continuous", "profile: nosuch"), "workload.profile"),
    "huge_label": (('"KVNAND-C-{dies} {precision}"', '"{dies:>99999999}"'), "known_designs[0].label"),
    "attribute_label": (('"KVNAND-C-{dies} {precision}"', '"{system.__class__}"'), "known_designs[0].label"),
}


@pytest.mark.parametrize("edit", sorted(SMOKE_EDITS))
def test_bad_space_files_are_refused_at_load(tmp_path, kvnand_cli, edit):
    from kvnand.paths import DSE_ROOT

    (old, new), key = SMOKE_EDITS[edit]
    text = (DSE_ROOT / "smoke.yaml").read_text()
    assert old in text
    (tmp_path / "space.yaml").write_text(text.replace(old, new))
    _refused(kvnand_cli("dse", "run", str(tmp_path / "space.yaml"), "--trials", "2", "--out", str(tmp_path / "o")),
             "space.yaml", key)
    assert not (tmp_path / "o").exists()


def test_grid_size_is_checked_before_the_grid_is_built(tmp_path, kvnand_cli):
    from kvnand.paths import DSE_ROOT

    text = (DSE_ROOT / "smoke.yaml").read_text().replace("g2_dies: {int: [1, 7]", "g2_dies: {int: [1, 20000000]")
    (tmp_path / "space.yaml").write_text(text.replace("g2_dies: [1, 4, 7]", "g2_dies: [1, 4]"))
    _refused(kvnand_cli("dse", "grid", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "o")),
             "parameters.g2_dies", "100000")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, key", [
    (["--seed", "-1"], "--seed"), (["--seed", str(2**32)], "--seed"),
    (["--storage", "sqlite:///:memory:", "--workers", "2"], "--storage"), (["--storage", "sqlite://"], "--storage"),
    (["--workers", "0"], "--workers"), (["--trials", "0"], "--trials"), (["--storage", "nosuch://x"], "--storage"),
])
def test_bad_dse_run_options_leave_nothing_behind(tmp_path, kvnand_cli, extra, key):
    from kvnand.paths import DSE_ROOT

    _refused(kvnand_cli("dse", "run", str(DSE_ROOT / "smoke.yaml"), "--out", str(tmp_path / "o"), *extra), key)
    assert not (tmp_path / "o").exists()


def test_dse_run_out_an_existing_file(tmp_path, kvnand_cli):
    from kvnand.paths import DSE_ROOT

    (tmp_path / "f").write_text("x")
    _refused(kvnand_cli("dse", "run", str(DSE_ROOT / "smoke.yaml"), "--out", str(tmp_path / "f")), "--out")
    assert (tmp_path / "f").read_text() == "x"


def test_reliability_of_a_model_given_as_a_path(tmp_path, kvnand_cli):
    """The decode rate was re-evaluated by the model's display name, which only the zoo resolves."""
    from kvnand.workload.model import zoo_dir

    (tmp_path / "mine.json").write_text((zoo_dir() / "llama3.1-8b.json").read_text())
    code, out, err = kvnand_cli("reliability", "--systems", "kvnand-d", "--models", str(tmp_path / "mine.json"),
                                "--contexts", "10k", "--format", "json")
    assert code == 0, err
    assert _strict(out)["results"][0]["tokens_per_s"] > 0


def test_yaml_exponent_numbers_are_numbers(tmp_path, kvnand_cli):
    """YAML 1.1 reads 1e-4 as a string; the strict schema would refuse it, so the loader reads it as 1.2 does."""
    f = tmp_path / "exp.yaml"
    f.write_text("schema_version: 1\nextends: kvnand-c16\nname: exp\nflash:\n  die:\n    cell:\n"
                 "      rber_pe_coeff: 2e-4\n")
    code, out, err = kvnand_cli("show-config", str(f))
    assert code == 0, err
    assert "rber_pe_coeff: 0.0002" in out


@pytest.mark.parametrize("storage", ["sqlite:///nope.db", "sqlite:///f.txt", "sqlite:///:memory:",
                                     "sqlite:///" + "a" * 300 + ".db"])
def test_dse_pareto_of_a_missing_or_foreign_database_creates_nothing(tmp_path, kvnand_cli, storage):
    (tmp_path / "f.txt").write_text("not a database")
    _refused(kvnand_cli("dse", "pareto", "--storage", storage, "--study", "s"), "--storage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "f.txt"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("cache_home", ["/proc", "/dev/null/x"])
def test_an_unusable_unit_cache_folder_only_costs_speed(tmp_path, cache_home):
    env = {**os.environ, "XDG_CACHE_HOME": cache_home, "KVNAND_CACHE_DIR": str(tmp_path / "kc")}
    proc = _kvnand("show-config", "kvnand-c16", env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def test_an_unwritable_point_cache_only_costs_speed(tmp_path, kvnand_cli, monkeypatch):
    monkeypatch.setenv("KVNAND_CACHE_DIR", "/proc/x")
    code, out, err = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b", "--contexts", "1k",
                                "--format", "json")
    assert code == 0, err
    assert _strict(out)["results"][0]["latency_s"] > 0
