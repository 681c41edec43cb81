"""Tables that compare like with like and lose nothing: equal-precision speedups with a precision column,
complete piped output, compact tables in narrow terminals, numbers never cut."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.table import Table

from kvnand.present.terminal import show

MIXED = ["--systems", "base1,kvnand-c16,cambricon-llm-l", "--models", "llama2-7b", "--contexts", "1k"]


def _row(out: str, system: str) -> str:
    return next(line for line in out.splitlines() if f" {system} " in line)


def test_speedups_are_at_equal_precision(kvnand_cli):
    code, out, err = kvnand_cli("report", *MIXED)
    assert code == 0, err
    row = _row(out, "cambricon-llm-l")
    assert "w8a8" in row and "bf16" in _row(out, "kvnand-c16")
    # cambricon (W8A8) against base1 run at W8A8, not base1's own BF16
    code, js, _ = kvnand_cli("report", *MIXED, "--format", "json")
    import json

    tps = {(r["system"], r["precision"]): r["tokens_per_s"] for r in json.loads(js)["results"]}
    _, ref, _ = kvnand_cli("report", "--systems", "base1", "--models", "llama2-7b", "--contexts", "1k",
                           "--precision", "w8a8", "--format", "json")
    base1_w8a8 = json.loads(ref)["results"][0]["tokens_per_s"]
    assert f"{tps[('cambricon-llm-l', 'w8a8')] / base1_w8a8:.2f}x base1" in row
    assert f"{tps[('cambricon-llm-l', 'w8a8')] / tps[('base1', 'bf16')]:.2f}x" not in row
    assert "base1 also at w8a8" in out and "at the row's precision" in out


def _wide_table() -> Table:
    t = Table(title="t")
    for col in ("name", "a number", "another number", "free text"):
        t.add_column(col)
    for i in range(3):
        t.add_row(f"a-rather-long-name-{i}", f"{3.9e100 * (i + 1):.3g}", f"{123456.789 * i:.6g}", "word " * 20)
    return t


def _print(width: int, terminal: bool, optional=(), monkeypatch=None) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    show(_wide_table(), con=con, optional=optional, text_columns=("free text",))
    return buf.getvalue()


def test_piped_output_is_complete(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = _print(80, terminal=False)
    assert "…" not in out and "a-rather-long-name-2" in out and "1.17e+101" in out
    assert max(len(line) for line in out.splitlines()) > 80  # as wide as the table, not cut at 80


def test_narrow_terminal_gets_a_compact_table_and_numbers_stay_whole():
    out = _print(70, terminal=True, optional=("free text",))
    assert "…" not in out and "┃" not in out  # compact: no box
    for number in ("3.9e+100", "7.8e+100", "1.17e+101", "246914"):
        assert re.search(rf"(?<![\d.e+]){re.escape(number)}(?![\d])", out), number
    assert "free text left out" in out
    assert max(len(line) for line in out.splitlines()) <= 70


def test_very_narrow_terminal_prints_one_block_per_row():
    out = _print(30, terminal=True)
    assert "…" not in out and out.count("a number") == 3 and "1.17e+101" in out


def test_reliability_at_100_columns_keeps_exponents(kvnand_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = kvnand_cli("reliability", "--models", "llama3.1-8b", "--contexts", "50k",
                                "--set", "profile.tokens_per_s=10")
    assert code == 0, err
    assert "…" not in out and not re.search(r"e\+\.|e\+$|e-\s", out)
    assert max(len(line) for line in out.splitlines()) <= 100


def test_models_piped_is_complete(kvnand_cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = kvnand_cli("models")
    assert code == 0 and "…" not in out and "mixtral-8x7b" in out and "KV/token (KiB)" in out


def test_report_at_80_columns_is_one_line_per_point(kvnand_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = kvnand_cli("report", "--systems", "base1,base2,kvnand-c16,kvnand-d:auto", "--models",
                                "llama2-7b,opt-30b", "--contexts", "1k,100k")
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in out
    header = next(line for line in lines if line.startswith("model"))
    assert all(h in header for h in ("precision", "tokens/s", "J/token", "speedup"))  # headers whole
    assert sum(re.search(r" kvnand-d:auto +bf16 ", line) is not None for line in lines) == 4  # one line per point
    assert len([line for line in lines if line.strip()]) < 40


def test_graph_piped_is_complete(kvnand_cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = kvnand_cli("graph", "llama3.1-8b")
    assert code == 0 and "…" not in out and "act out (KB)" in out and "lm_head" in out


def test_validate_at_100_columns_folds_ids_not_numbers(kvnand_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    _, out, _ = kvnand_cli("validate")
    lines = [line for line in out.splitlines() if not line.startswith("enforced:")]  # the table, not the summary
    assert "…" not in out and max(len(line) for line in lines) <= 100
    assert any(line.startswith("case") and "simulated" in line for line in lines)  # a table, not blocks
