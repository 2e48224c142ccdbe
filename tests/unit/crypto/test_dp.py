"""Discrete Laplace noise via OpenDP: integer output, right distribution, right loss."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest

from headcount.crypto import dp
from headcount.crypto.dp import NoiseSpec, privacy_loss, sample_noise
from headcount.errors import InvalidRequest

N_SAMPLES = 20_000


def _discrete_laplace_variance(scale: float) -> float:
    # P(k) ∝ t^|k| with t = exp(-1/scale); variance 2t / (1 - t)^2, which tends to
    # 2 scale² - 1/6 for large scale.
    t = math.exp(-1.0 / scale)
    return 2 * t / (1 - t) ** 2


def _discrete_laplace_p0(scale: float) -> float:
    t = math.exp(-1.0 / scale)
    return (1 - t) / (1 + t)


def test_noise_is_a_list_of_ints_of_the_requested_size() -> None:
    noise = sample_noise(NoiseSpec(epsilon=1.0), 50)
    assert len(noise) == 50
    assert all(type(x) is int for x in noise)
    assert any(x != 0 for x in noise)  # P(all 50 zero) ~ 0.46**50
    assert any(x < 0 for x in noise)  # noise is two-sided


def test_zero_size_gives_empty_noise() -> None:
    assert sample_noise(NoiseSpec(epsilon=1.0), 0) == []


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(0.5, 1), (1.0, 2)])
def test_noise_follows_discrete_laplace(epsilon: float, sensitivity: int) -> None:
    spec = NoiseSpec(epsilon=epsilon, sensitivity=sensitivity)
    assert spec.scale == pytest.approx(2.0)
    noise = sample_noise(spec, N_SAMPLES)
    expected_var = _discrete_laplace_variance(spec.scale)  # 7.83, near 2 * 2² = 8
    assert expected_var == pytest.approx(2 * spec.scale**2, rel=0.03)
    # Bounds are many standard errors wide (mean: sd ~0.02; variance: sd ~1.6%;
    # P(0): sd ~0.003), so this does not flake, yet a wrong scale (e.g. epsilon
    # instead of 1/epsilon, or sensitivity ignored) or a continuous or one-sided
    # distribution fails it.
    assert abs(statistics.fmean(noise)) < 0.2
    assert statistics.pvariance(noise) == pytest.approx(expected_var, rel=0.12)
    p0 = noise.count(0) / N_SAMPLES
    assert p0 == pytest.approx(_discrete_laplace_p0(spec.scale), abs=0.02)


@pytest.mark.parametrize(
    ("epsilon", "sensitivity"), [(0.1, 1), (0.3, 1), (0.7, 3), (1.0, 1), (2.5, 4), (1e6, 1)]
)
def test_privacy_loss_is_the_requested_epsilon(epsilon: float, sensitivity: int) -> None:
    loss = privacy_loss(NoiseSpec(epsilon=epsilon, sensitivity=sensitivity))
    assert abs(loss - epsilon) <= 1e-9 * max(1.0, epsilon)
    assert loss >= epsilon  # OpenDP rounds the loss up, never down


def test_scale_is_sensitivity_over_epsilon() -> None:
    assert NoiseSpec(epsilon=0.25, sensitivity=3).scale == 12.0


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf, -math.inf, True, "1", 1e-13])
def test_bad_epsilon_raises(epsilon: Any) -> None:
    with pytest.raises(InvalidRequest):
        NoiseSpec(epsilon=epsilon)


@pytest.mark.parametrize("sensitivity", [0, -1, 1.5, True])
def test_bad_sensitivity_raises(sensitivity: Any) -> None:
    with pytest.raises(InvalidRequest):
        NoiseSpec(epsilon=1.0, sensitivity=sensitivity)


def test_unknown_mechanism_raises() -> None:
    with pytest.raises(InvalidRequest, match="mechanism"):
        NoiseSpec(epsilon=1.0, mechanism="gaussian")


@pytest.mark.parametrize("size", [-1, 2.0, True])
def test_bad_size_raises(size: Any) -> None:
    with pytest.raises(InvalidRequest):
        sample_noise(NoiseSpec(epsilon=1.0), size)


def test_noise_is_refused_when_opendp_certifies_a_different_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = dp._measurement

    class Overspending:
        def __init__(self, spec: NoiseSpec) -> None:
            self._inner = real(spec)

        def map(self, d_in: int) -> float:
            return 2 * float(self._inner.map(d_in=d_in))

        def __call__(self, arg: list[int]) -> list[int]:
            raise AssertionError("noise must not be drawn under a wrong certificate")

    monkeypatch.setattr(dp, "_measurement", Overspending)
    with pytest.raises(InvalidRequest, match="certifies"):
        privacy_loss(NoiseSpec(epsilon=1.0))
    with pytest.raises(InvalidRequest, match="certifies"):
        sample_noise(NoiseSpec(epsilon=1.0), 3)
