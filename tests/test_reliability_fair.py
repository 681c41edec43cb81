"""`kvnand reliability` compares lifetimes fairly: tokens/s beside each lifetime, tokens per lifetime, and
the lifetime of every design at one common decode rate."""

from __future__ import annotations

import json

import pytest

from kvnand.reliability.profile import DAYS_PER_YEAR


def test_lifetime_at_a_common_rate(kvnand_cli):
    # KVNAND-D reads one head group per phase, so its naive log is much slower than page mapping (on head-
    # parallel KVNAND-C the rotated naive log is as fast for GQA models)
    code, out, err = kvnand_cli("reliability", "--systems", "kvnand-d", "--models", "llama3.1-8b",
                                "--contexts", "50k", "--mapping", "naive,page", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    naive, page = doc["results"]
    assert (naive["mapping"], page["mapping"]) == ("naive", "page")
    slow, fast = sorted((naive, page), key=lambda r: r["tokens_per_s"])
    assert doc["common_tokens_per_s"] == slow["tokens_per_s"]  # the slowest design's rate: all can sustain it
    for r in (naive, page):
        common = r["at_common_rate"]
        assert common["tokens_per_s"] == doc["common_tokens_per_s"]
        for x in (r, common):  # continuous profile: 24 h a day
            assert x["tokens_per_lifetime"] == pytest.approx(x["lifetime_years"] * DAYS_PER_YEAR * 86_400
                                                             * x["tokens_per_s"])
    assert slow["at_common_rate"]["lifetime_years"] == slow["lifetime_years"]
    assert fast["at_common_rate"]["lifetime_years"] > fast["lifetime_years"]  # it wore out faster by running faster


def test_table_shows_rate_and_fair_lifetime(kvnand_cli):
    code, out, err = kvnand_cli("reliability", "--systems", "kvnand-c16", "--models", "llama3.1-8b",
                                "--contexts", "10k", "--rate", "5")
    assert code == 0, err
    assert "tokens/s" in out and "tokens/lifetime" in out and "lifetime @5 tok/s (y)" in out


def test_bad_rate_is_a_clear_error(kvnand_cli):
    code, _, err = kvnand_cli("reliability", "--rate", "0")
    assert code == 2 and "--rate" in err and "Traceback" not in err
