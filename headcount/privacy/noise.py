"""Discrete Laplace noise drawn in shares, so that no single party knows the noise.

Each of ``n >= 2`` share-holders draws one share per released count and adds it
under encryption; nobody ever sees the total. A share is the difference of two
independent negative binomial variables ``NB(1/(n-1), p)`` with ``p = exp(-1/b)``
(``NB(r, p)`` counts failures, ``P(k) = Γ(k+r)/(Γ(r) k!) (1-p)^r p^k``). Negative
binomials with the same ``p`` add up by shape, so:

* any ``n - 1`` shares sum to ``NB(1, p) - NB(1, p)``, which is exactly discrete
  Laplace with scale ``b`` (``P(k) ∝ exp(-|k|/b)``). A share-holder who subtracts
  its own share still faces that much noise, so a count of L1 sensitivity ``Δ``
  released with ``b = Δ / epsilon`` is ``epsilon``-DP against any one share-holder
  (plus everyone who sees the release);
* all ``n`` shares sum to ``NB(n/(n-1), p) - NB(n/(n-1), p)``: a little wider, the
  price of not trusting any single party with the noise (``total_noise_pmf``);
* a coalition of ``t >= 2`` share-holders faces only ``NB((n-t)/(n-1), p)``
  differences, less than scale ``b``: the scheme tolerates one corrupt share-holder.

Why discrete Laplace and pure DP rather than the discrete Gaussian and zCDP: the
discrete Laplace is infinitely divisible (it is a difference of geometrics, and a
geometric is ``NB(1, p)``), so shares sum to exactly the target distribution. A sum
of discrete Gaussians is not a discrete Gaussian (Canonne, Kamath & Steinke 2020,
"The discrete Gaussian for differential privacy", section on sums), so Gaussian
shares would only approximate the analysed mechanism. Pure DP also composes by
plain addition, which is what ``headcount.privacy.accountant`` audits.

How a share is drawn: ``NB(r, p)`` for non-integer ``r`` is compound Poisson, the
sum of ``N ~ Poisson(-r ln(1-p))`` independent logarithmic-series variables
(``P(k) = -p^k / (k ln(1-p))``, ``k >= 1``). ``N`` comes from inverting a Poisson CDF
table (the mean is at most ``ln(b) + 1``, so the table is short) and each
logarithmic variable from Kemp's LK algorithm (Kemp 1981, "Efficient generation of
logarithmically distributed pseudo-random variables", Applied Statistics 30(3);
the algorithm numpy's ``logseries`` uses). With two share-holders the shape is 1,
a plain geometric, drawn by inversion from one uniform.

Randomness comes only from ``random.SystemRandom``, i.e. the kernel CSPRNG via
``os.urandom``: there is no seed, and no generator state to replay or recover from
outputs. That is also why the tests are statistical.

Floating point: the uniforms have 53 bits and the CDF table, logarithms and
``expm1`` are float64, so each noise value's probability is off by an absolute
amount of order 2^-50, far below anything a test or an analyst can see; the output
is always an exact Python ``int``. Unlike ``headcount.crypto.dp`` (OpenDP's exact
sampler) this is not an exact sampler, so read "pure epsilon-DP" as holding up to
events of probability of that order. The float arithmetic touches only the noise,
never a count: the count is added as an integer under encryption, so the output
has none of the gaps Mironov (2012) exploits in floating-point Laplace.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import random

import numpy as np
import numpy.typing as npt

from headcount.errors import InvalidRequest

log = logging.getLogger(__name__)

# Same ceiling as headcount.crypto.dp: a larger scale drowns any count a federation
# could hold, so anything beyond it is a mistake.
MAX_SCALE = 1e12

# Longest one-sided negative binomial pmf total_noise_pmf will tabulate (32 MiB of
# float64). Enough for an interval at scale ~5e4; a count released with more noise
# than that carries no usable information anyway.
MAX_PMF_SUPPORT = 2**22

# Stateless and thread-safe: every call reads os.urandom.
_rng = random.SystemRandom()

# Poisson mass left out of the inversion table (it is folded into the last entry).
_POISSON_TAIL = 2.0**-64

# Negative binomial mass left out when tabulating pmfs: far below float64 rounding
# of a probability near 1.
_LOG_PMF_TAIL = math.log(1e-17)


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise InvalidRequest(f"scale must be a number, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0 or scale > MAX_SCALE:
        raise InvalidRequest(f"scale must be finite, > 0 and <= {MAX_SCALE:g}, got {scale!r}")
    return float(scale)


def _check_shareholders(shareholders: object) -> int:
    if isinstance(shareholders, bool) or not isinstance(shareholders, int):
        raise InvalidRequest("shareholders must be an int")
    if shareholders < 2:
        raise InvalidRequest(f"shareholders must be >= 2, got {shareholders}")
    return shareholders


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an int")
    if value < 0:
        raise InvalidRequest(f"{name} must be >= 0, got {value}")
    return value


def _check_coverage(coverage: object) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, int | float):
        raise InvalidRequest("coverage must be a number")
    if not 0.0 < coverage < 1.0:
        raise InvalidRequest(f"coverage must be in (0, 1), got {coverage!r}")
    return float(coverage)


def _log1mexp(a: float) -> float:
    """ln(1 - e^-a) for a > 0, accurate for small and large a (Mächler 2012)."""
    if a <= math.log(2.0):
        return math.log(-math.expm1(-a))
    return math.log1p(-math.exp(-a))


def _poisson_cdf(mean: float) -> list[float]:
    """CDF table of Poisson(mean) for inversion; its last entry is exactly 1.0."""
    if mean <= 0.0:
        return [1.0]
    log_mean = math.log(mean)
    cdf: list[float] = []
    total = 0.0
    k = 0
    while True:
        pmf = math.exp(-mean + k * log_mean - math.lgamma(k + 1))
        total += pmf
        cdf.append(total)
        # Past the mode each term is the previous times mean/(j+1) < 1, so the tail
        # after k is at most pmf * r / (1 - r) with r = mean / (k + 1).
        ratio = mean / (k + 1)
        if ratio < 1.0 and pmf * ratio / (1.0 - ratio) < _POISSON_TAIL:
            break
        k += 1
    # Fold the omitted tail and the summation rounding into the last entry, so a
    # uniform in [0, 1) always lands inside the table.
    cdf[-1] = 1.0
    return cdf


def _logarithmic(p: float, log_1mp: float) -> int:
    """One logarithmic-series variable with parameter p (Kemp's LK algorithm)."""
    v = 1.0 - _rng.random()  # in (0, 1], so log(v) below is defined
    if v >= p:
        return 1
    q = -math.expm1(log_1mp * _rng.random())  # 1 - (1-p)^U, in [0, p)
    if v <= q * q:
        return int(1.0 + math.log(v) / math.log(q))
    if v <= q:
        return 2
    return 1


def _negative_binomial(poisson_cdf: list[float], p: float, log_1mp: float) -> int:
    """One NB(r, p) variable as a Poisson(-r ln(1-p)) sum of logarithmic variables."""
    terms = bisect.bisect_right(poisson_cdf, _rng.random())
    total = 0
    for _ in range(terms):
        total += _logarithmic(p, log_1mp)
    return total


def _geometric(scale: float) -> int:
    """One NB(1, p) variable, p = exp(-1/scale), by inversion: P(G >= k) = p^k."""
    return int(math.log(1.0 - _rng.random()) * -scale)


def draw_share(scale: float, shareholders: int, size: int) -> list[int]:
    """One share-holder's noise share: ``size`` independent integers.

    ``scale`` is the discrete Laplace scale ``b`` that any ``shareholders - 1``
    shares sum to (finite, > 0, <= ``MAX_SCALE``); ``shareholders`` is the number of
    parties each drawing a share (an int >= 2; with 2, a share is itself discrete
    Laplace); ``size`` is the number of counts (an int >= 0). Raises
    ``InvalidRequest`` on any value out of range.
    """
    scale = _check_scale(scale)
    shareholders = _check_shareholders(shareholders)
    size = _check_count("size", size)
    if shareholders == 2:
        # Shape 1 is a plain geometric: one uniform per draw instead of a compound
        # Poisson sum, whose length grows like ln(scale).
        share = [_geometric(scale) - _geometric(scale) for _ in range(size)]
        log.debug("drew a noise share of %d values (1 of 2 holders)", size)
        return share
    shape = 1.0 / (shareholders - 1)
    p = math.exp(-1.0 / scale)
    log_1mp = _log1mexp(1.0 / scale)
    cdf = _poisson_cdf(-shape * log_1mp)
    share = [
        _negative_binomial(cdf, p, log_1mp) - _negative_binomial(cdf, p, log_1mp)
        for _ in range(size)
    ]
    log.debug("drew a noise share of %d values (1 of %d holders)", size, shareholders)
    return share


def _nb2_tail_index(scale: float, log_tol: float) -> int:
    """A t with P(NB(2, p) > t) <= exp(log_tol); bounds NB(s, p) for every s <= 2 too.

    P(NB(2, p) > t) = p^(t+1) (1 + (t+1)(1-p)), and NB(s) <= NB(2) stochastically
    because NB(2) = NB(s) + NB(2-s). Not necessarily the smallest such t.
    """
    one_minus_p = -math.expm1(-1.0 / scale)

    def log_tail(t: int) -> float:
        return -(t + 1) / scale + math.log1p((t + 1) * one_minus_p)

    t = max(0, math.ceil(-log_tol * scale) - 1)
    while log_tail(t) > log_tol:
        t += 1 + t // 16
    return t


def _difference_pmf(scale: float, shape: float, bound: int) -> npt.NDArray[np.float64]:
    """P(A - B = k) for k in [-bound, bound], A, B i.i.d. NB(shape, exp(-1/scale)).

    Absolute error below ~1e-15 (FFT rounding); tails smaller than that read as 0.
    """
    length = bound + _nb2_tail_index(scale, _LOG_PMF_TAIL) + 1
    if length > MAX_PMF_SUPPORT:
        raise InvalidRequest(
            f"noise at scale {scale:g} up to ±{bound} needs a table of {length} values, "
            f"above {MAX_PMF_SUPPORT}"
        )
    log_1mp = _log1mexp(1.0 / scale)
    base = shape * log_1mp - math.lgamma(shape)
    # -k / scale rather than k * ln(p): exact, and defined when 1/scale overflows.
    log_pmf = np.fromiter(
        (math.lgamma(k + shape) - math.lgamma(k + 1.0) + base - k / scale for k in range(length)),
        dtype=np.float64,
        count=length,
    )
    one_side = np.exp(log_pmf)
    # P(D = k) = sum_j P(A = j + k) P(B = j): an autocorrelation, done by FFT with
    # enough zero padding that the circular wrap never reaches k <= bound.
    nfft = 1 << (2 * length - 1).bit_length()
    spectrum = np.fft.rfft(one_side, nfft)
    auto = np.fft.irfft(np.abs(spectrum) ** 2, nfft)[: bound + 1]
    auto = np.clip(auto, 0.0, None)  # FFT rounding can dip a deep tail below 0
    return np.concatenate([auto[:0:-1], auto])


def _laplace_pmf(scale: float, bound: int) -> npt.NDArray[np.float64]:
    """Discrete Laplace pmf on [-bound, bound]: (1-p)/(1+p) p^|k|, p = exp(-1/scale)."""
    log_norm = _log1mexp(1.0 / scale) - math.log1p(math.exp(-1.0 / scale))
    k = np.abs(np.arange(-bound, bound + 1, dtype=np.float64))
    return np.exp(log_norm - k / scale)


def total_noise_pmf(scale: float, shareholders: int | None, bound: int) -> npt.NDArray[np.float64]:
    """P(noise = k) for k = -bound .. bound, as an array of length ``2 * bound + 1``.

    The noise is the sum of all ``shareholders`` shares drawn by ``draw_share`` at
    ``scale``, i.e. ``NB(n/(n-1), p) - NB(n/(n-1), p)``; ``shareholders=None`` means
    plain discrete Laplace with that scale (closed form, any scale). With shares,
    the negative binomial pmf is tabulated in log space (lgamma) and convolved, so
    ``bound`` plus the distribution's tail must fit in ``MAX_PMF_SUPPORT`` values
    (about ``bound + 40 * scale``). Raises ``InvalidRequest`` on a bad argument or
    a table too large.
    """
    scale = _check_scale(scale)
    bound = _check_count("bound", bound)
    if shareholders is None:
        return _laplace_pmf(scale, bound)
    n = _check_shareholders(shareholders)
    return _difference_pmf(scale, n / (n - 1), bound)


def _laplace_coverage(scale: float, h: int) -> float:
    """P(|X| <= h) for discrete Laplace X: 1 - 2 p^(h+1) / (1 + p)."""
    p = math.exp(-1.0 / scale)
    return 1.0 - 2.0 * math.exp(-(h + 1) / scale) / (1.0 + p)


@functools.lru_cache(maxsize=1024)
def _interval_halfwidth(scale: float, shareholders: int | None, coverage: float) -> int:
    if shareholders is None:
        # Closed form, then a step either way to undo rounding at the boundary.
        p = math.exp(-1.0 / scale)
        h = max(0, math.ceil(-scale * math.log((1.0 - coverage) * (1.0 + p) / 2.0)) - 1)
        while _laplace_coverage(scale, h) < coverage:
            h += 1
        while h > 0 and _laplace_coverage(scale, h - 1) >= coverage:
            h -= 1
        return h
    # |A - B| <= max(A, B), so P(|noise| > t) <= 2 P(NB(2) > t): t bounds the answer.
    upper = _nb2_tail_index(scale, math.log((1.0 - coverage) / 2.0))
    right = total_noise_pmf(scale, shareholders, upper)[upper:]
    covered = 2.0 * np.cumsum(right) - right[0]
    reached = np.flatnonzero(covered >= coverage)
    return int(reached[0]) if reached.size else upper


def interval_halfwidth(scale: float, shareholders: int | None, coverage: float = 0.95) -> int:
    """Smallest integer h with P(|noise| <= h) >= ``coverage``.

    The noise is the total ``total_noise_pmf`` describes for the same ``scale`` and
    ``shareholders`` (None: plain discrete Laplace). ``coverage`` is in (0, 1).
    Results are cached, as this is asked once per released cell. Raises
    ``InvalidRequest`` on a bad argument, or (with shares) a scale above ~5e4.
    """
    scale = _check_scale(scale)
    coverage = _check_coverage(coverage)
    if shareholders is not None:
        shareholders = _check_shareholders(shareholders)
    return _interval_halfwidth(scale, shareholders, coverage)


@functools.lru_cache(maxsize=1024)
def _margin_bounds(scale: float, shareholders: int, cells: int, coverage: float) -> tuple[int, int]:
    tail = (1.0 - coverage) / 2.0
    bound = _interval_halfwidth(scale, shareholders, 1.0 - 1e-12)
    one = total_noise_pmf(scale, shareholders, bound)
    positive = np.concatenate([[one[: bound + 1].sum()], one[bound + 1 :]])
    total, parts = one, positive
    for _ in range(cells - 1):
        total = np.convolve(total, one)
        parts = np.convolve(parts, positive)
    # Sum of the cells' noise: symmetric around 0; its upper quantile bounds
    # how far the released margin can sit below the truth.
    centre = (len(total) - 1) // 2
    # First j with P(sum >= j) <= tail, so P(sum > j - 1) <= tail.
    first = int(np.flatnonzero(np.cumsum(total[centre:][::-1])[::-1] <= tail)[0])
    below = max(0, first - 1)
    above = int(np.flatnonzero(np.cumsum(parts) >= 1.0 - tail)[0])
    return above, below


def margin_bounds(
    scale: float, shareholders: int, cells: int, coverage: float = 0.95
) -> tuple[int, int]:
    """How far a margin of ``cells`` noisy cells, each clipped at 0, may be from the truth.

    A margin adds ``max(count_i + noise_i, 0)``; since every true count is >= 0,
    each term's error lies between ``noise_i`` and ``max(noise_i, 0)``. So the
    truth lies in ``[margin - above, margin + below]`` with probability at least
    ``coverage``, where ``above`` is the upper ``(1 - coverage) / 2`` quantile of
    the sum of the positive parts of the noises and ``below`` that of the sum
    of the noises (each cell's noise as ``total_noise_pmf``). Returns
    ``(above, below)``; cached. Raises ``InvalidRequest`` on a bad argument.
    """
    scale = _check_scale(scale)
    coverage = _check_coverage(coverage)
    n = _check_shareholders(shareholders)
    k = _check_count("cells", cells)
    if k < 1:
        raise InvalidRequest("a margin adds at least one cell")
    return _margin_bounds(scale, n, k, coverage)


def guessing_bound(epsilon: float) -> float:
    """Best success rate, e^eps / (1 + e^eps), of guessing a uniform secret bit from
    an ``epsilon``-DP release (finite, >= 0; raises ``InvalidRequest`` otherwise)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise InvalidRequest("epsilon must be a number")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise InvalidRequest(f"epsilon must be finite and >= 0, got {epsilon!r}")
    # 1 / (1 + e^-eps): the same value without overflow for a large epsilon.
    return 1.0 / (1.0 + math.exp(-epsilon))
