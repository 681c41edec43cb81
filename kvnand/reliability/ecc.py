"""Raw bit errors and ECC: a parametric RBER model, BCH codeword failure, UBER and read retries.

    RBER(pe, reads, t) = rber_fresh + rber_pe_coeff * (pe / pe_cycles) ** rber_pe_exponent
                         + rber_read_coeff * reads / read_disturb_limit + rber_retention_coeff_per_year * t / 1 year

The coefficients come from the die YAML (`cell.rber_*`), where they are stated as assumptions. Bit errors
are independent, so a BCH(n, k, t) codeword fails when more than t of its n bits flip: the binomial
tail. UBER = P(codeword fails) / k. A failed decode triggers a read retry (a re-sense at shifted
reference voltages, one more tR each). We assume each retry is an independent draw at the same
RBER, so the expected retries per page read is p / (1 - p), with p the page's failure probability.
UBER gives no credit for retries (real retries face correlated errors): it is that of the first read,
which makes it conservative.

The binomial tail is scipy.special.betainc(t + 1, n - t, p), the regularized incomplete beta that
scipy.stats.binom.sf itself evaluates (the same Boost routine, so the same value to the last bit) without
importing scipy.stats (about half a second) or paying its per-call argument handling (~40x slower).
scipy.special.bdtrc names the same tail but evaluates it with Cephes' incomplete beta, which differs
from binom.sf by up to ~1e-11 relative at BCH codeword sizes (1e-10 at 1e5 bits).
"""

from __future__ import annotations

import math
from functools import lru_cache

from kvnand.config.schema import CellMode, Ecc
from kvnand.reliability.profile import DAYS_PER_YEAR, SECONDS_PER_DAY

SECONDS_PER_YEAR = DAYS_PER_YEAR * SECONDS_PER_DAY


def rber(cell: CellMode, pe: float, reads: float, retention_s: float) -> float:
    return min(0.5, cell.rber_fresh + cell.rber_pe_coeff * (pe / cell.pe_cycles) ** cell.rber_pe_exponent
               + cell.rber_read_coeff * reads / cell.read_disturb_limit
               + cell.rber_retention_coeff_per_year * retention_s / SECONDS_PER_YEAR)


def codeword_failure(n_bits: int, t: int, p: float) -> float:
    """P(more than t of n_bits independent bits flip at bit error rate p)."""
    from scipy.special import betainc

    if t < 0:
        return 1.0
    if t >= n_bits:
        return 0.0
    return float(betainc(t + 1, n_bits - t, p))


def codeword_bits(ecc: Ecc) -> tuple[int, int]:
    """(n, k) of the code in bits."""
    return round((ecc.codeword_data + ecc.codeword_parity) * 8), round(ecc.codeword_data * 8)


def uber(ecc: Ecc, p: float) -> float:
    n, k = codeword_bits(ecc)
    return codeword_failure(n, ecc.t, p) / k


def expected_retries(ecc: Ecc, page_bytes: float, p: float) -> float:
    """Expected read retries per page read (independent retries at the same RBER)."""
    n, _ = codeword_bits(ecc)
    cw = codeword_failure(n, ecc.t, p)
    fail = -math.expm1(page_bytes / ecc.codeword_data * math.log1p(-cw)) if cw < 1.0 else 1.0
    return math.inf if fail >= 1.0 else fail / (1.0 - fail)


def rber_limit(ecc: Ecc, uber_target: float) -> float:
    """The RBER at which UBER reaches `uber_target`."""
    n, k = codeword_bits(ecc)
    return _rber_limit(n, k, ecc.t, uber_target)


@lru_cache(maxsize=256)
def _rber_limit(n: int, k: int, t: int, uber_target: float) -> float:
    import numpy as np
    from scipy.optimize import brentq

    target = math.log(uber_target * k)

    def log_failure(p: float) -> float:  # numpy's log, as binom.logsf takes it (-inf at 0)
        with np.errstate(divide="ignore"):
            return float(np.log(codeword_failure(n, t, p)))

    # bracket: from a mean of t/100 flips per codeword (far below target) to half the bits
    return brentq(lambda p: log_failure(p) - target, t / n / 100, 0.5, xtol=1e-12, rtol=1e-10)


def errors(cell: CellMode, ecc: Ecc, page_bytes: float, pe: float, reads: float, retention_s: float) -> dict:
    """Error figures of one block state: RBER, codeword failure probability, UBER, expected retries."""
    p = rber(cell, pe, reads, retention_s)
    n, _ = codeword_bits(ecc)
    return {"rber": p, "codeword_failure": codeword_failure(n, ecc.t, p), "uber": uber(ecc, p),
            "expected_read_retries": expected_retries(ecc, page_bytes, p)}
