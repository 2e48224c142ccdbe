"""Noise shares: n-1 shares are discrete Laplace, the total matches its pmf, intervals cover.

The sampler reads os.urandom, so these tests are statistical. Each goodness-of-fit
test uses a chi-square threshold at about 1e-6 false-alarm probability, yet a
share of the wrong shape (half or 1.5 times the variance) overshoots it by far.
The reference pmfs are computed here from their closed forms or with lgamma and
np.correlate, independently of the module's FFT path.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from headcount.errors import InvalidRequest
from headcount.privacy.noise import (
    MAX_SCALE,
    draw_share,
    guessing_bound,
    interval_halfwidth,
    total_noise_pmf,
)

N_SAMPLES = 40_000
SCALE = 3.0
BOUND = 400  # P(|noise| > 400) at scale 3 is below e^-130

Pmf = npt.NDArray[np.float64]


def _laplace_pmf(scale: float, bound: int) -> Pmf:
    t = math.exp(-1.0 / scale)
    k = np.arange(-bound, bound + 1)
    return (1 - t) / (1 + t) * t ** np.abs(k)


def _nb_difference_pmf(scale: float, shape: float, bound: int) -> Pmf:
    """Reference P(A - B = k), A, B ~ NB(shape, e^-1/scale), by direct correlation."""
    p = math.exp(-1.0 / scale)
    n = bound + 60 * math.ceil(scale)  # NB mass beyond 60 scales is below 1e-24
    one_side = np.array(
        [
            math.exp(
                math.lgamma(k + shape)
                - math.lgamma(shape)
                - math.lgamma(k + 1)
                + shape * math.log1p(-p)
                + k * math.log(p)
            )
            for k in range(n)
        ]
    )
    full = np.correlate(one_side, one_side, mode="full")  # index n-1 is k = 0
    return full[n - 1 - bound : n + bound]


def _chi_square_threshold(df: int, z: float = 4.75) -> float:
    # Wilson-Hilferty approximation to the chi-square quantile; z = 4.75 is a
    # one-sided normal tail of about 1e-6.
    return float(df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3)


def _chi_square(samples: list[int], pmf: Pmf) -> tuple[float, int]:
    """Chi-square statistic and degrees of freedom of ``samples`` against a symmetric
    ``pmf`` on [-bound, bound], bins with expected count < 5 merged into two tails."""
    n = len(samples)
    bound = (len(pmf) - 1) // 2
    kept = [k for k in range(-bound, bound + 1) if n * pmf[k + bound] >= 5]
    lo, hi = kept[0], kept[-1]
    inner = pmf[lo + bound : hi + bound + 1]
    tail = (1.0 - float(inner.sum())) / 2.0
    counts = Counter(samples)
    observed = [sum(c for k, c in counts.items() if k < lo)]
    observed += [counts.get(k, 0) for k in range(lo, hi + 1)]
    observed += [sum(c for k, c in counts.items() if k > hi)]
    expected = [n * tail, *(n * inner), n * tail]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return stat, len(expected) - 1


def _sum_of_shares(scale: float, shareholders: int, count: int, size: int) -> list[int]:
    shares = [draw_share(scale, shareholders, size) for _ in range(count)]
    return [sum(values) for values in zip(*shares, strict=True)]


def test_a_share_is_a_list_of_ints_of_the_requested_size() -> None:
    share = draw_share(10.0, 3, 50)
    assert len(share) == 50
    assert all(type(x) is int for x in share)
    assert any(x < 0 for x in share) and any(x > 0 for x in share)
    assert draw_share(10.0, 3, 0) == []


@pytest.mark.parametrize("shareholders", [2, 3, 4])
def test_any_n_minus_1_shares_sum_to_discrete_laplace(shareholders: int) -> None:
    noise = _sum_of_shares(SCALE, shareholders, shareholders - 1, N_SAMPLES)
    stat, df = _chi_square(noise, _laplace_pmf(SCALE, BOUND))
    assert stat < _chi_square_threshold(df)


def test_a_single_share_of_three_is_not_discrete_laplace() -> None:
    share = draw_share(SCALE, 3, N_SAMPLES)
    stat, df = _chi_square(share, _laplace_pmf(SCALE, BOUND))
    assert stat > 10 * _chi_square_threshold(df)
    # Its variance is half the discrete Laplace's, 2t/(1-t)^2 (sd of the estimate ~1.5%).
    t = math.exp(-1.0 / SCALE)
    assert np.var(share) == pytest.approx(t / (1 - t) ** 2, rel=0.1)
    # ... and it is NB(1/2) - NB(1/2), which is what makes two of them Laplace.
    stat, df = _chi_square(share, _nb_difference_pmf(SCALE, 0.5, BOUND))
    assert stat < _chi_square_threshold(df)


@pytest.mark.parametrize("shareholders", [2, 3, 4])
def test_all_n_shares_sum_to_the_total_noise_pmf(shareholders: int) -> None:
    noise = _sum_of_shares(SCALE, shareholders, shareholders, N_SAMPLES)
    stat, df = _chi_square(noise, total_noise_pmf(SCALE, shareholders, BOUND))
    assert stat < _chi_square_threshold(df)
    # The total is wider than discrete Laplace, by a margin this test can see.
    stat, df = _chi_square(noise, _laplace_pmf(SCALE, BOUND))
    assert stat > _chi_square_threshold(df)


@pytest.mark.parametrize("shareholders", [None, 2, 3, 4, 10])
def test_total_noise_pmf_is_a_symmetric_distribution(shareholders: int | None) -> None:
    pmf = total_noise_pmf(SCALE, shareholders, BOUND)
    assert pmf.shape == (2 * BOUND + 1,)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(pmf >= 0)
    assert np.array_equal(pmf, pmf[::-1])
    # Variance of NB(s) - NB(s) is 2 s t / (1 - t)^2, with s = n / (n - 1).
    shape = 1.0 if shareholders is None else shareholders / (shareholders - 1)
    t = math.exp(-1.0 / SCALE)
    k = np.arange(-BOUND, BOUND + 1)
    assert float((pmf * k**2).sum()) == pytest.approx(2 * shape * t / (1 - t) ** 2, rel=1e-9)


@pytest.mark.parametrize(("scale", "shareholders"), [(3.0, 3), (10.0, 4), (0.5, 2)])
def test_total_noise_pmf_matches_a_direct_reference(scale: float, shareholders: int) -> None:
    expected = _nb_difference_pmf(scale, shareholders / (shareholders - 1), 50)
    assert total_noise_pmf(scale, shareholders, 50) == pytest.approx(expected, abs=1e-14)


def test_plain_and_two_holder_pmfs_have_closed_forms() -> None:
    laplace = _laplace_pmf(SCALE, BOUND)
    assert total_noise_pmf(SCALE, None, BOUND) == pytest.approx(laplace, rel=1e-12)
    # Two holders: the total is the sum of two independent discrete Laplace shares.
    twice = np.convolve(laplace, laplace)[BOUND : 3 * BOUND + 1]
    assert total_noise_pmf(SCALE, 2, BOUND) == pytest.approx(twice, abs=1e-15)


def _coverage(pmf: Pmf, h: int) -> float:
    bound = (len(pmf) - 1) // 2
    return float(pmf[bound - h : bound + h + 1].sum())


@pytest.mark.parametrize("shareholders", [None, 2, 3, 4])
@pytest.mark.parametrize("scale", [0.3, 3.0, 10.0, 250.0])
@pytest.mark.parametrize("coverage", [0.5, 0.95, 0.99])
def test_interval_halfwidth_is_the_smallest_covering_h(
    scale: float, shareholders: int | None, coverage: float
) -> None:
    h = interval_halfwidth(scale, shareholders, coverage)
    pmf = total_noise_pmf(scale, shareholders, 60 * math.ceil(scale))
    assert _coverage(pmf, h) >= coverage
    if h > 0:
        assert _coverage(pmf, h - 1) < coverage


def test_interval_covers_drawn_totals() -> None:
    h = interval_halfwidth(SCALE, 3)
    assert h == interval_halfwidth(SCALE, 3, 0.95)  # the default coverage
    noise = _sum_of_shares(SCALE, 3, 3, N_SAMPLES)
    exact = _coverage(total_noise_pmf(SCALE, 3, BOUND), h)
    assert 0.95 <= exact < 0.97
    empirical = sum(abs(x) <= h for x in noise) / N_SAMPLES
    # The sd of the empirical rate is ~0.0011; 5 sd either side.
    assert exact - 0.0055 < empirical < exact + 0.0055


def test_plain_interval_at_a_huge_scale_matches_the_continuous_laplace() -> None:
    # For a large scale the discrete Laplace tends to the continuous one, whose 95%
    # half-width is scale * ln 20.
    assert interval_halfwidth(1e12, None) == pytest.approx(1e12 * math.log(20), rel=1e-9)


def test_guessing_bound() -> None:
    assert guessing_bound(0.0) == 0.5
    assert guessing_bound(math.log(3)) == pytest.approx(0.75)
    assert guessing_bound(1000.0) == 1.0


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf, MAX_SCALE * 2, True, "3"])
def test_bad_scale_raises(scale: Any) -> None:
    with pytest.raises(InvalidRequest):
        draw_share(scale, 3, 1)
    with pytest.raises(InvalidRequest):
        total_noise_pmf(scale, 3, 1)
    with pytest.raises(InvalidRequest):
        interval_halfwidth(scale, None)


@pytest.mark.parametrize("shareholders", [1, 0, -2, True, 3.0, "3"])
def test_bad_shareholders_raise(shareholders: Any) -> None:
    with pytest.raises(InvalidRequest):
        draw_share(1.0, shareholders, 1)
    with pytest.raises(InvalidRequest):
        total_noise_pmf(1.0, shareholders, 1)
    with pytest.raises(InvalidRequest):
        interval_halfwidth(1.0, shareholders)


@pytest.mark.parametrize("size", [-1, 2.0, True, None])
def test_bad_size_or_bound_raises(size: Any) -> None:
    with pytest.raises(InvalidRequest):
        draw_share(1.0, 3, size)
    with pytest.raises(InvalidRequest):
        total_noise_pmf(1.0, 3, size)


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5, -0.1, math.nan, True])
def test_bad_coverage_raises(coverage: Any) -> None:
    with pytest.raises(InvalidRequest):
        interval_halfwidth(1.0, 3, coverage)


def test_a_table_too_large_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="table"):
        total_noise_pmf(1e6, 3, 10)
    with pytest.raises(InvalidRequest, match="table"):
        interval_halfwidth(1e6, 3)


@pytest.mark.parametrize("epsilon", [-0.1, math.nan, math.inf, True])
def test_bad_guessing_epsilon_raises(epsilon: Any) -> None:
    with pytest.raises(InvalidRequest):
        guessing_bound(epsilon)
