"""Empirical lower bounds on epsilon from attack games.

An attack game runs a mechanism many times on one of two neighbouring inputs and
lets an adversary guess which. Any ``epsilon``-DP mechanism (pure DP, delta = 0)
caps what the adversary can achieve: a true positive rate at most ``e^epsilon``
times the false positive rate (and likewise for the negatives), hence a success
rate at most ``e^epsilon / (1 + e^epsilon)`` when the secret bit is uniform. Turned
around, an observed success rate that is significantly higher proves the
mechanism leaks more than ``epsilon``. The bounds here use exact (Clopper-Pearson)
binomial confidence limits, so at the stated confidence they never overstate the
leak; they are evidence against a claimed epsilon, never a proof of one.
"""

from __future__ import annotations

import math

from headcount.errors import InvalidRequest

# Bisection stops once the bracket is this narrow: well inside the 1e-9 accuracy
# the callers need, and well above float spacing near 1.
_BRACKET = 1e-12

# Relative size below which further binomial terms are dropped.
_TERM_TOL = 1e-17


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an int")
    return value


def _check_trials(
    successes: object, trials: object, names: tuple[str, str] = ("successes", "trials")
) -> tuple[int, int]:
    hits = _check_int(names[0], successes)
    total = _check_int(names[1], trials)
    if total < 1:
        raise InvalidRequest(f"{names[1]} must be >= 1, got {total}")
    if not 0 <= hits <= total:
        raise InvalidRequest(f"{names[0]} must be in [0, {names[1]}], got {hits} of {total}")
    return hits, total


def _check_confidence(confidence: object) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise InvalidRequest("confidence must be a number")
    if not 0.0 < confidence < 1.0:
        raise InvalidRequest(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), to about 1e-15 absolute.

    Sums from k away from the mode, where the terms fall, and stops once the rest
    is provably negligible; so a call costs about the width of the tail, not n.
    """
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    odds = p / (1.0 - p)
    if k < (n + 1) * p:
        # Below the mode: P(i-1) / P(i) = i / ((n-i+1) odds) < 1 and falls with i.
        term = math.exp(_log_binom_pmf(k, n, p))
        total = term
        for i in range(k, 0, -1):
            ratio = i / ((n - i + 1) * odds)
            term *= ratio
            total += term
            # The rest is at most term * r / (1 - r), as later ratios are smaller.
            if term * ratio / (1.0 - ratio) <= _TERM_TOL * total:
                break
        return min(total, 1.0)
    # At or above the mode: sum the upper tail P(X > k) instead, where
    # P(i+1) / P(i) = (n-i) odds / (i+1) < 1 and falls with i.
    term = math.exp(_log_binom_pmf(k + 1, n, p))
    upper = term
    for i in range(k + 1, n):
        ratio = (n - i) * odds / (i + 1)
        term *= ratio
        upper += term
        if term * ratio / (1.0 - ratio) <= _TERM_TOL * upper:
            break
    return max(1.0 - upper, 0.0)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval (Clopper & Pearson 1934).

    Returns ``(lower, upper)`` within [0, 1], each accurate to 1e-9: ``lower`` is
    the p with P(X >= successes) = alpha/2 (0 when successes = 0), ``upper`` the p
    with P(X <= successes) = alpha/2 (1 when successes = trials), where
    alpha = 1 - ``confidence``. Raises ``InvalidRequest`` unless ``trials`` >= 1,
    0 <= ``successes`` <= ``trials`` (ints) and 0 < ``confidence`` < 1.
    """
    # Bisection on the exact binomial CDF (log space, math.lgamma) rather than the
    # incomplete beta's inverse: it avoids a scipy dependency for two quantiles.
    successes, trials = _check_trials(successes, trials)
    tail = (1.0 - _check_confidence(confidence)) / 2.0
    lower = 0.0
    if successes > 0:
        # P(X >= successes) rises with p.
        lo, hi = 0.0, 1.0
        while hi - lo > _BRACKET:
            mid = (lo + hi) / 2.0
            if 1.0 - _binom_cdf(successes - 1, trials, mid) < tail:
                lo = mid
            else:
                hi = mid
        lower = (lo + hi) / 2.0
    upper = 1.0
    if successes < trials:
        # P(X <= successes) falls with p.
        lo, hi = 0.0, 1.0
        while hi - lo > _BRACKET:
            mid = (lo + hi) / 2.0
            if _binom_cdf(successes, trials, mid) > tail:
                lo = mid
            else:
                hi = mid
        upper = (lo + hi) / 2.0
    return lower, upper


def epsilon_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Epsilon any mechanism must have, given ``successes`` of ``trials`` guesses right.

    For a balanced game (secret bit uniform), an ``epsilon``-DP mechanism caps the
    success rate at e^eps / (1 + e^eps). With p_lo the lower end of the two-sided
    Clopper-Pearson interval at ``confidence`` (a one-sided bound at
    (1 + confidence) / 2, so slightly conservative), returns
    max(0, ln(p_lo / (1 - p_lo))). Raises ``InvalidRequest`` as ``clopper_pearson``.
    """
    p_lo, _ = clopper_pearson(successes, trials, confidence)
    if p_lo <= 0.5:
        return 0.0
    return math.log(p_lo / (1.0 - p_lo))


def epsilon_lower_bound_rates(
    true_pos: int,
    positives: int,
    false_pos: int,
    negatives: int,
    confidence: float = 0.95,
) -> float:
    """Epsilon lower bound from a hypothesis test's true and false positive counts.

    ``true_pos`` of ``positives`` trials on input A and ``false_pos`` of
    ``negatives`` trials on input B were flagged "A". Pure ``epsilon``-DP implies
    TPR <= e^eps FPR and TNR <= e^eps FNR, so eps >= ln(TPR / FPR) and
    eps >= ln((1 - FPR) / (1 - TPR)). Both hold on the one event TPR >= TPR_lo and
    FPR <= FPR_hi; taking each bound from its own Clopper-Pearson interval at
    ``confidence`` puts alpha/2 on each of those two sides (Bonferroni), so the
    result holds with probability >= ``confidence``. Returns the larger of the
    two, at least 0. Raises ``InvalidRequest`` on counts or confidence out of range.
    """
    true_pos, positives = _check_trials(true_pos, positives, ("true_pos", "positives"))
    false_pos, negatives = _check_trials(false_pos, negatives, ("false_pos", "negatives"))
    confidence = _check_confidence(confidence)
    tpr_lo, _ = clopper_pearson(true_pos, positives, confidence)
    _, fpr_hi = clopper_pearson(false_pos, negatives, confidence)
    bound = 0.0
    # fpr_hi > 0 and tpr_lo < 1 always hold for finite trials.
    if tpr_lo > fpr_hi:
        bound = max(math.log(tpr_lo / fpr_hi), math.log((1.0 - fpr_hi) / (1.0 - tpr_lo)))
    return bound
