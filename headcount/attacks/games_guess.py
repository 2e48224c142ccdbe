"""The adversary's guess: the likelihood ratio of what it saw under each bit.

It knows the mechanism: the noise distribution (``headcount.privacy.noise``),
the part of the noise it drew itself, and the small-number rule (a noisy count
is published as ``SdcPolicy.release_value`` of it, or withheld).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from headcount.errors import InvalidRequest
from headcount.local import LocalFederation
from headcount.privacy.noise import total_noise_pmf
from headcount.protect.sdc import SdcPolicy

# Tails of the noise beyond this many scales carry mass below 1e-17.
_NOISE_SCALES = 45
# Floor under a likelihood, so that an impossible observation counts as strong
# evidence rather than an infinity.
_TINY = 1e-300


@dataclass(frozen=True, slots=True)
class Sighting:
    """One count as the adversary saw it, and what it would be under each bit.

    ``observed``: the published value (None: suppressed), or with ``exact`` the
    decrypted noisy count. ``known_noise``: the noise the adversary drew itself.
    ``if_one``/``if_zero``: the true count if the bit is 1 / 0.
    """

    observed: int | None
    exact: bool
    known_noise: int
    if_one: int
    if_zero: int


@functools.lru_cache(maxsize=64)
def unknown_noise(scale: float, shareholders: int, known: int) -> tuple[npt.NDArray[Any], int]:
    """Pmf of the noise an adversary knowing ``known`` of the ``shareholders``
    shares does not know, on -bound..bound; returns (pmf, bound)."""
    if known >= shareholders:
        return np.array([1.0]), 0
    bound = math.ceil(_NOISE_SCALES * scale) + 10
    if known == 0:
        return total_noise_pmf(scale, shareholders, bound), bound
    if known == 1:
        # Any shareholders - 1 shares sum to discrete Laplace at the full scale.
        return total_noise_pmf(scale, None, bound), bound
    raise InvalidRequest("a game's adversary knows no share, one share or all of them")


def _likelihood(
    s: Sighting, count: int, noise: tuple[npt.NDArray[Any], int], policy: SdcPolicy
) -> float:
    pmf, bound = noise
    base = count + s.known_noise
    if s.exact:
        if s.observed is None:
            raise InvalidRequest("an exact sighting has a value")
        k = s.observed - base
        return float(pmf[k + bound]) if -bound <= k <= bound else 0.0
    return float(
        sum(
            p
            for z, p in zip(range(-bound, bound + 1), pmf.tolist(), strict=True)
            if policy.release_value(base + z) == s.observed
        )
    )


def log_likelihood_ratio(
    sightings: Sequence[Sighting],
    scale: float,
    shareholders: int,
    known: int,
    policy: SdcPolicy,
) -> float:
    """ln P(sightings | bit 1) - ln P(sightings | bit 0), each count's noise
    independent, at the noise ``scale`` of the releases."""
    noise = unknown_noise(scale, shareholders, known)
    total = 0.0
    for s in sightings:
        one = _likelihood(s, s.if_one, noise, policy)
        zero = _likelihood(s, s.if_zero, noise, policy)
        total += math.log(max(one, _TINY)) - math.log(max(zero, _TINY))
    return total


def sdc_policy(fed: LocalFederation) -> SdcPolicy:
    out = fed.config.output
    return SdcPolicy(out.suppress_below, out.rounding_base, out.secondary_suppression)


def released_sightings(
    cells: Mapping[str, tuple[int | None, str]],
    expected: Mapping[str, tuple[int, int]],
    known: Mapping[str, int] | None = None,
) -> list[Sighting]:
    """Sightings of the published ``cells`` (group -> (value or None, status))
    named in ``expected`` (group -> count if the bit is 1, if 0). A cell
    withheld to protect another says nothing."""
    out = []
    for group, (one, zero) in expected.items():
        if group not in cells:
            raise InvalidRequest(f"the released table has no cell {group!r}")
        value, status = cells[group]
        if status == "secondary":
            continue
        out.append(Sighting(value, False, (known or {}).get(group, 0), one, zero))
    return out


def release_cells(table: Mapping[str, Any]) -> dict[str, tuple[int | None, str]]:
    """The cells of a release as the audit log and the coordinator's store keep
    it (``coordinator.coordinator.release_json``): group -> (value, status)."""
    return {
        str(c["group"]): (None if c["value"] is None else int(c["value"]), str(c["status"]))
        for c in table["cells"]
    }
