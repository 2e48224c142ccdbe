"""Differential-privacy noise for released counts, drawn by OpenDP.

The coordinator adds this noise to Paillier ciphertexts homomorphically, so the
noise must be integers (possibly negative): Paillier plaintexts are integers mod n,
and a negative integer is added as its residue mod n.

Why the discrete Laplace (two-sided geometric) mechanism:

* Counts are integers, and adding integer noise keeps them integers, so nothing
  has to be rounded after the fact.
* OpenDP samples it exactly, from uniform random bits, with no floating-point
  arithmetic on the sampling path. Textbook floating-point Laplace leaks through
  the gaps and rounding pattern of IEEE doubles (Mironov 2012, "On significance of
  the least significant bits for differential privacy"); an exact integer sampler
  has no such gaps to exploit.
* For a count vector where one person changes one cell by at most 1 (L1
  sensitivity 1), scale ``sensitivity / epsilon`` gives pure ``epsilon``-DP, and
  OpenDP's privacy map certifies that loss from its own proofs rather than ours.

OpenDP draws from the operating system's CSPRNG, so the noise cannot be replayed
from a seed. That is also why the tests here are statistical.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import opendp.prelude as dp

from headcount.errors import InvalidRequest

log = logging.getLogger(__name__)

# make_laplace is in OpenDP's "contrib" tier (proven, not yet vetted); enabling it
# is process-wide and idempotent.
dp.enable_features("contrib")

MECHANISMS: tuple[str, ...] = ("discrete_laplace",)

# Largest noise scale accepted. Noise is drawn as 64-bit integers, and OpenDP
# saturates at the type's bounds rather than failing; at scale 1e12 the chance of a
# draw reaching 2**63 is about exp(-9e6), i.e. never. A scale this large already
# drowns any count a federation could hold, so anything beyond it is a mistake.
MAX_SCALE = 1e12

# OpenDP's privacy map rounds up (it must never under-report the loss), so the
# certified epsilon may exceed the requested one by a few ULPs.
_LOSS_TOLERANCE = 1e-9

# i64 rather than Python's default int (i32 in OpenDP): i32 noise saturates at
# ±2**31 for scales around 1e9, silently clipping the tails the proof relies on.
_ATOM = "i64"


@dataclass(frozen=True, slots=True)
class NoiseSpec:
    """What noise to add to one released count vector.

    ``epsilon`` is the privacy loss of the whole vector (per query), finite and > 0.
    ``sensitivity`` is the L1 sensitivity of the vector, an int >= 1: in a
    count-by-group table one person changes one count by 1, so it is 1.
    Raises ``InvalidRequest`` on any value out of range.
    """

    epsilon: float
    sensitivity: int = 1
    mechanism: str = "discrete_laplace"

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, int | float):
            raise InvalidRequest(f"epsilon must be a number, got {type(self.epsilon).__name__}")
        if not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise InvalidRequest(f"epsilon must be finite and > 0, got {self.epsilon!r}")
        if isinstance(self.sensitivity, bool) or not isinstance(self.sensitivity, int):
            raise InvalidRequest("sensitivity must be an int")
        if self.sensitivity < 1:
            raise InvalidRequest(f"sensitivity must be >= 1, got {self.sensitivity}")
        if self.mechanism not in MECHANISMS:
            raise InvalidRequest(
                f"unknown mechanism {self.mechanism!r}; supported: {', '.join(MECHANISMS)}"
            )
        if not math.isfinite(self.scale) or self.scale > MAX_SCALE:
            raise InvalidRequest(
                f"epsilon {self.epsilon!r} gives noise scale {self.scale:g}, above {MAX_SCALE:g}"
            )

    @property
    def scale(self) -> float:
        """Discrete Laplace scale b = sensitivity / epsilon (noise variance ~ 2 b²)."""
        return self.sensitivity / self.epsilon


def _measurement(spec: NoiseSpec) -> Any:
    """OpenDP measurement: integer vector in, same vector plus discrete Laplace noise out.

    In OpenDP 0.16, ``make_laplace`` over an integer domain samples the discrete
    Laplace distribution (its docs: "all sampling is done using the discrete
    Laplace distribution"); the vector/L1 form charges the whole vector once.
    """
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=_ATOM)),
        dp.l1_distance(T=_ATOM),
        scale=spec.scale,
    )


def _certified_loss(spec: NoiseSpec, measurement: Any) -> float:
    """Epsilon OpenDP certifies for ``spec``; raises InvalidRequest if it exceeds spec's."""
    loss = float(measurement.map(d_in=spec.sensitivity))
    # Relative as well as absolute, so a large epsilon is not refused over one ULP.
    if abs(loss - spec.epsilon) > _LOSS_TOLERANCE * max(1.0, spec.epsilon):
        raise InvalidRequest(
            f"OpenDP certifies epsilon {loss!r} for this noise, not the requested {spec.epsilon!r}"
        )
    return loss


def privacy_loss(spec: NoiseSpec) -> float:
    """The epsilon OpenDP's privacy map certifies for one release under ``spec``.

    Equal to ``spec.epsilon`` within 1e-9 (relative for epsilon > 1); raises
    ``InvalidRequest`` if OpenDP certifies a materially different loss.
    """
    return _certified_loss(spec, _measurement(spec))


def sample_noise(spec: NoiseSpec, size: int) -> list[int]:
    """Draw ``size`` independent discrete Laplace integers with scale ``spec.scale``.

    Together the vector costs ``spec.epsilon`` (for a count vector of L1
    sensitivity ``spec.sensitivity``). Raises ``InvalidRequest`` if ``size`` is
    negative or not an int.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidRequest("size must be an int")
    if size < 0:
        raise InvalidRequest(f"size must be >= 0, got {size}")
    measurement = _measurement(spec)
    # Check the certificate before sampling, so noise is never drawn under a spec
    # whose real loss differs from what the budget ledger will be charged.
    _certified_loss(spec, measurement)
    # Applying the mechanism to a zero vector yields the noise alone, which the
    # coordinator then adds under encryption.
    noise = [int(x) for x in measurement([0] * size)]
    log.debug("drew %d noise values at epsilon %g", size, spec.epsilon)
    return noise
