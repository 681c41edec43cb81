"""Reliability at the speed of the physics: the binomial tail without scipy.stats, the decode rate from the
decode step alone, a caller's evaluate() record reused, and nothing heavy imported by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.evaluation import decode_rate, evaluate_reliability
from kvnand.reliability import ecc

# BCH codewords of the presets and the DSE spaces (1 KiB + 56/112/168 B parity), small codes and edge cases
CODEWORD_BITS = (1, 2, 15, 63, 1000, 8640, 9088, 9536, 100_000)
RATES = (0.0, 1e-300, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 3e-3, 1e-2, 0.1, 0.5, 0.999, 1.0)


def _reference(t: int, n: int, p: float) -> float:
    from scipy.stats import binom

    return float(binom.sf(t, n, p))


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def test_binomial_tail_equals_scipy_stats_over_codes_and_edge_cases():
    for n in CODEWORD_BITS:
        for t in sorted({-1, 0, 1, 32, 64, 96, n // 2, n - 1, n, n + 1}):
            for p in RATES:
                assert _close(ecc.codeword_failure(n, t, p), _reference(t, n, p)), (n, t, p)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 200_000), frac=st.floats(0, 1), p=st.floats(0, 0.5))
def test_binomial_tail_equals_scipy_stats_at_random_points(n, frac, p):
    t = int(frac * n)
    assert _close(ecc.codeword_failure(n, t, p), _reference(t, n, p))


def test_bdtrc_is_not_the_same_tail():
    """Why betainc and not bdtrc: Cephes' incomplete beta differs from binom.sf (Boost) beyond 1e-12."""
    from scipy.special import bdtrc

    worst = max(abs(float(bdtrc(t, n, p)) - _reference(t, n, p)) / _reference(t, n, p)
                for n in (8640, 9088, 100_000) for t in (1, 64) for p in (1e-6, 1e-4))
    assert worst > 1e-12


def test_rber_limit_is_cached_and_unchanged():
    from kvnand.config.loader import load_system

    code = load_system("kvnand-d").flash.ecc
    p = ecc.rber_limit(code, 1e-15)
    assert ecc.rber_limit(code, 1e-15) == p and ecc._rber_limit.cache_info().hits >= 1
    assert ecc.uber(code, p) == pytest.approx(1e-15, rel=1e-6)


@pytest.mark.parametrize("system,model,context,precision,overrides", [
    ("kvnand-d", "llama3.1-70b", 9_500, "w8a8", {"dies": 8, "g2_dies": 3}),
    ("kvnand-c16", "opt-30b", 29_500, "w4a16", {"dies": 8}),
    ("kvnand-d", "llama3.1-8b", 99_500, None, {}),
    ("cambricon-llm-m", "llama3.1-8b", 500, None, {}),
])
def test_decode_rate_is_evaluates_tokens_per_s(system, model, context, precision, overrides):
    full = kvnand.evaluate(system, model, context, precision=precision, overrides=overrides)["tokens_per_s"]
    assert decode_rate(system, model, context, precision, overrides) == full


def test_decode_rate_of_a_point_that_does_not_fit_is_none():
    rec = kvnand.evaluate("kvnand-d", "llama3.1-70b", 3_000_000, overrides={"dies": 8, "g2_dies": 4})
    assert rec["oom"] and decode_rate("kvnand-d", "llama3.1-70b", 3_000_000, None, {"dies": 8, "g2_dies": 4}) is None


def test_auto_split_taken_from_the_callers_record(monkeypatch):
    point = ("kvnand-d:auto", "llama3.1-8b", 10_000)
    record = kvnand.evaluate(*point)
    alone = evaluate_reliability(*point)
    import kvnand.evaluation as ev

    def no_second_ranking(*a, **k):
        raise AssertionError("evaluate() called although the caller passed its record")

    monkeypatch.setattr(ev, "evaluate", no_second_ranking)
    assert evaluate_reliability(*point, record=record) == alone
    assert alone["config"]["overrides"]["g2_dies"] == record["config"]["g2_dies"]


def test_reliability_cli_ages_the_auto_split_at_the_common_rate(kvnand_cli):
    code, out, err = kvnand_cli("reliability", "--systems", "kvnand-d:auto,kvnand-d", "--models", "llama3.1-8b",
                                "--contexts", "10k", "--rate", "5", "--format", "json")
    assert code == 0, err
    auto = json.loads(out)["results"][0]
    g2 = auto["config"]["overrides"]["g2_dies"]
    direct = evaluate_reliability("kvnand-d", "llama3.1-8b", 10_000,
                                  overrides={"g2_dies": g2, "profile.tokens_per_s": 5})
    assert auto["at_common_rate"]["lifetime_years"] == direct["lifetime_years"]


def test_cli_import_loads_no_heavy_module():
    heavy = ("scipy", "matplotlib", "optuna", "pint", "pydantic", "sqlalchemy")
    code = ("import sys, json, kvnand.cli; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_reliability_point_loads_no_scipy_stats():
    code = ("import sys; from kvnand.evaluation import evaluate_reliability; "
            "evaluate_reliability('kvnand-d', 'llama3.1-8b', 10000, overrides={'refresh.trigger': 'rber'}); "
            "print(sorted(m for m in sys.modules if m.startswith('scipy.stats') or m.startswith('matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_codeword_failure_grows_with_the_bit_error_rate():
    ps = np.linspace(0, 0.02, 50)
    tails = [ecc.codeword_failure(9088, 64, float(p)) for p in ps]
    assert all(a <= b for a, b in zip(tails, tails[1:], strict=False))


def test_a_rate_the_caller_measured_gives_the_same_reliability():
    """A grid passes the decode rate at the session's mean decode context from evaluate_many; evaluate_reliability
    then gives what it gives measuring that rate itself (NaN: that context does not fit, as decode_rate's None)."""
    import math

    from kvnand.columnar import evaluate_many
    from kvnand.reliability.profile import get_profile, session

    ov = {"dies": 16, "g2_dies": 5}
    for context in (2000, 40_000):
        mean = session(get_profile("continuous"), context).mean_decode_context
        rate = float(evaluate_many("kvnand-d", "llama3.1-8b", [mean], overrides=[ov], breakdowns=False)
                     ["tokens_per_s"][0])
        assert rate == decode_rate("kvnand-d", "llama3.1-8b", mean, None, ov)
        given = evaluate_reliability("kvnand-d", "llama3.1-8b", context, overrides=ov, rate=rate)
        assert given == evaluate_reliability("kvnand-d", "llama3.1-8b", context, overrides=ov)
    big = evaluate_reliability("kvnand-d", "llama3.1-70b", 10**7, overrides=ov, rate=math.nan)
    assert big == evaluate_reliability("kvnand-d", "llama3.1-70b", 10**7, overrides=ov)


@pytest.mark.parametrize("system,overrides", [("kvnand-d", {"dies": 16, "g2_dies": 5}), ("kvnand-c16", {}),
                                              ("base2", {}), ("csd-offload", {})])
def test_lifetime_is_reliabilitys_own_fields(system, overrides):
    from kvnand.reliability import lifetime, reliability

    for context in (1000, 60_000, 10**8):
        full = reliability(system, "llama3.1-8b", context, overrides=overrides, tokens_per_s=20.0)
        lean = lifetime(system, "llama3.1-8b", context, overrides=overrides, tokens_per_s=20.0)
        assert lean == {k: full[k] for k in ("oom", "max_reads_per_block", "read_disturb_limit", "lifetime_years")}
