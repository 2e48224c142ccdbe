"""Attack-game bounds: exact Clopper-Pearson limits and the epsilon lower bounds."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from headcount.errors import InvalidRequest
from headcount.privacy.bounds import (
    clopper_pearson,
    epsilon_lower_bound,
    epsilon_lower_bound_rates,
)
from headcount.privacy.noise import guessing_bound


# Exact 95% intervals as tabulated for the Clopper & Pearson (1934) method in
# standard binomial tables (4 decimal places).
@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        (0, 10, (0.0, 0.3085)),
        (10, 10, (0.6915, 1.0)),
        (5, 10, (0.1871, 0.8129)),
        (50, 100, (0.3983, 0.6017)),
    ],
)
def test_known_intervals(successes: int, trials: int, expected: tuple[float, float]) -> None:
    lower, upper = clopper_pearson(successes, trials)
    assert lower == pytest.approx(expected[0], abs=1e-4)
    assert upper == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize("trials", [1, 7, 100, 10_000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.999])
def test_all_or_nothing_have_closed_forms(trials: int, confidence: float) -> None:
    # With 0 successes the upper limit solves (1 - p)^n = alpha/2; with n, p^n = alpha/2.
    tail = (1 - confidence) / 2
    assert clopper_pearson(0, trials, confidence)[1] == pytest.approx(
        1 - tail ** (1 / trials), abs=1e-9
    )
    assert clopper_pearson(trials, trials, confidence)[0] == pytest.approx(
        tail ** (1 / trials), abs=1e-9
    )


def _binomial_cdf(k: int, n: int, p: float) -> float:
    # Plain summation of every term, independent of the module's truncated sums.
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("successes", "trials"), [(1, 3), (7, 23), (40, 200), (199, 200)])
def test_limits_solve_the_defining_equations(successes: int, trials: int) -> None:
    lower, upper = clopper_pearson(successes, trials, 0.9)
    assert 1 - _binomial_cdf(successes - 1, trials, lower) == pytest.approx(0.05, abs=1e-10)
    assert _binomial_cdf(successes, trials, upper) == pytest.approx(0.05, abs=1e-10)


def test_large_and_lopsided_trials_are_fast_and_sane() -> None:
    lower, upper = clopper_pearson(3, 1_000_000)
    # About (0.619, 8.77) per million: the Poisson limits for 3 events.
    assert lower == pytest.approx(0.619e-6, rel=1e-3)
    assert upper == pytest.approx(8.767e-6, rel=1e-3)
    lower, upper = clopper_pearson(500_000, 1_000_000)
    assert lower < 0.5 < upper
    assert upper - lower == pytest.approx(2 * 1.96 * 0.0005, rel=1e-3)


def test_higher_confidence_gives_a_wider_interval() -> None:
    narrow = clopper_pearson(30, 100, 0.9)
    wide = clopper_pearson(30, 100, 0.99)
    assert wide[0] < narrow[0] < 0.3 < narrow[1] < wide[1]


def test_a_coin_flip_proves_no_leak() -> None:
    assert epsilon_lower_bound(50, 100) == 0.0
    assert epsilon_lower_bound(0, 100) == 0.0


def test_epsilon_lower_bound_rises_with_successes() -> None:
    bounds = [epsilon_lower_bound(s, 200) for s in range(201)]
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert bounds[-1] > 0


def test_a_high_success_rate_gives_a_positive_bound_below_the_point_estimate() -> None:
    bound = epsilon_lower_bound(990, 1000)
    assert 3.0 < bound < math.log(0.99 / 0.01)


def test_an_attack_at_the_dp_limit_proves_no_more_than_epsilon() -> None:
    # An adversary who succeeds exactly as often as epsilon-DP allows must not be
    # credited with more than epsilon.
    for epsilon in (0.1, 1.0, 3.0):
        trials = 100_000
        successes = math.floor(guessing_bound(epsilon) * trials)
        assert epsilon_lower_bound(successes, trials) < epsilon


def test_rates_bound() -> None:
    assert epsilon_lower_bound_rates(50, 100, 50, 100) == 0.0
    assert epsilon_lower_bound_rates(0, 100, 0, 100) == 0.0
    bound = epsilon_lower_bound_rates(90, 100, 10, 100)
    assert 0.0 < bound < math.log(0.9 / 0.1)
    # With TPR = 0.5 and FPR = 0 the TPR/FPR form dominates; with TPR = 1 and
    # FPR = 0.5 the TNR/FNR form does, and the two cases mirror each other.
    lopsided = epsilon_lower_bound_rates(500, 1000, 0, 1000)
    assert lopsided > math.log(0.45 / 0.004)
    assert epsilon_lower_bound_rates(1000, 1000, 500, 1000) == pytest.approx(lopsided)


def test_rates_bound_at_the_dp_limit_proves_no_more_than_epsilon() -> None:
    epsilon = 1.0
    n = 100_000
    fpr = 0.2
    tpr = math.exp(epsilon) * fpr  # the largest TPR epsilon-DP allows at this FPR
    bound = epsilon_lower_bound_rates(math.floor(tpr * n), n, math.ceil(fpr * n), n)
    assert 0.9 < bound < epsilon


@pytest.mark.parametrize(
    ("successes", "trials", "confidence"),
    [
        (-1, 10, 0.95),
        (11, 10, 0.95),
        (0, 0, 0.95),
        (1.0, 10, 0.95),
        (True, 10, 0.95),
        (1, 10, 0.0),
        (1, 10, 1.0),
        (1, 10, float("nan")),
        (1, 10, "0.95"),
    ],
)
def test_bad_arguments_are_refused(successes: Any, trials: Any, confidence: Any) -> None:
    with pytest.raises(InvalidRequest):
        clopper_pearson(successes, trials, confidence)
    with pytest.raises(InvalidRequest):
        epsilon_lower_bound(successes, trials, confidence)
    with pytest.raises(InvalidRequest):
        epsilon_lower_bound_rates(successes, trials, 0, 10, confidence)
    with pytest.raises(InvalidRequest):
        epsilon_lower_bound_rates(0, 10, successes, trials, confidence)
