"""Weighted maximum-likelihood fits of beta densities, for the score mixture.

`weighted_beta` fits Beta(a, b) to weighted observations given as log x and
log(1 - x); the beta log-likelihood is concave in (a, b), so projected Newton
steps reach the constrained maximum. Digamma and trigamma are computed here
(recurrence, then the asymptotic series) rather than taken from scipy, which
the kernel does not depend on.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_SHAPE", "MIN_SHAPE", "MIN_WEIGHT", "beta_logpdf", "weighted_beta"]

MIN_SHAPE, MAX_SHAPE = 1e-2, 1e5
MIN_WEIGHT = 1e-9  # total weights at or below this are treated as none


def beta_logpdf(log_x: np.ndarray, log_1mx: np.ndarray, a: float, b: float) -> np.ndarray:
    out: np.ndarray = (a - 1.0) * log_x + (b - 1.0) * log_1mx - _log_beta(a, b)
    return out


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def weighted_beta(
    weights: np.ndarray,
    log_x: np.ndarray,
    log_1mx: np.ndarray,
    start: tuple[float, float],
    *,
    a_min: float,
    b_min: float,
    mean_at_most_half: bool = False,
) -> tuple[float, float]:
    """Weighted MLE of Beta(a, b) with a >= a_min and b >= b_min.

    The beta log-likelihood ``(a-1) L1 + (b-1) L2 - log B(a, b)`` is concave in
    (a, b), so projected Newton steps with backtracking reach the constrained
    maximum; on a bound, the step is taken along the free coordinate only.
    Returns ``start`` (clamped into range) when the weights are negligible.
    """
    a = min(max(start[0], a_min), MAX_SHAPE)
    b = min(max(start[1], b_min), MAX_SHAPE)
    total = float(weights.sum())
    if total <= MIN_WEIGHT:
        return a, b
    mean_log_x = float(np.dot(weights, log_x)) / total
    mean_log_1mx = float(np.dot(weights, log_1mx)) / total

    def objective(a: float, b: float) -> float:
        return (a - 1.0) * mean_log_x + (b - 1.0) * mean_log_1mx - _log_beta(a, b)

    for _ in range(100):
        psi_ab = _digamma(a + b)
        grad_a = mean_log_x - _digamma(a) + psi_ab
        grad_b = mean_log_1mx - _digamma(b) + psi_ab
        tri_ab = _trigamma(a + b)
        h_aa = tri_ab - _trigamma(a)
        h_bb = tri_ab - _trigamma(b)
        h_ab = tri_ab
        det = h_aa * h_bb - h_ab * h_ab
        step_a = -(grad_a * h_bb - grad_b * h_ab) / det
        step_b = -(grad_b * h_aa - grad_a * h_ab) / det
        if a <= a_min and step_a < 0.0:
            step_a, step_b = 0.0, -grad_b / h_bb
        if b <= b_min and step_b < 0.0:
            step_b = 0.0
            step_a = -grad_a / h_aa if not (a <= a_min and grad_a < 0.0) else 0.0
        start_value = objective(a, b)
        scale = 1.0
        while True:
            new_a = min(max(a + scale * step_a, a_min), MAX_SHAPE)
            new_b = min(max(b + scale * step_b, b_min), MAX_SHAPE)
            if objective(new_a, new_b) >= start_value - 1e-12 or scale < 1e-8:
                break
            scale /= 2.0
        done = abs(new_a - a) <= 1e-10 * a and abs(new_b - b) <= 1e-10 * b
        a, b = new_a, new_b
        if done:
            break
    if mean_at_most_half and a > b:
        # The concave objective's maximum under a <= b then lies on a == b:
        # maximise the one-dimensional (a - 1)(L1 + L2) - log B(a, a).
        a = b = _symmetric_beta(mean_log_x + mean_log_1mx, max(a_min, b_min), b)
    return a, b


def _symmetric_beta(mean_log_sum: float, lower: float, start: float) -> float:
    """argmax over a >= lower of (a - 1) * mean_log_sum - log B(a, a), by Newton."""
    a = min(max(start, lower), MAX_SHAPE)
    for _ in range(100):
        grad = mean_log_sum - 2.0 * _digamma(a) + 2.0 * _digamma(2.0 * a)
        hess = 4.0 * _trigamma(2.0 * a) - 2.0 * _trigamma(a)  # < 0: concave
        new_a = min(max(a - grad / hess, lower), MAX_SHAPE)
        if abs(new_a - a) <= 1e-10 * a:
            return new_a
        a = new_a
    return a


def _digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-12)."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return result + math.log(x) - 0.5 / x - series


def _trigamma(x: float) -> float:
    """psi'(x) for x > 0, computed like `_digamma`."""
    result = 0.0
    while x < 6.0:
        result += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    series = f / x * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))
    return result + 1.0 / x + f / 2.0 + series
