"""The two-component mixture of link scores, fitted by EM (`fit_mixture`).

On ``x = (score - floor) / (1 - floor)``:

* matches: probability ``exact_share`` of a score of exactly 1 (identical
  encodings; most true matches under the default schema), otherwise
  ``Beta(a_m, b_m)`` with ``a_m >= 1`` (density vanishing at the floor);
* non-matches: ``Beta(a_u, b_u)`` with ``a_u >= 1`` and ``b_u >= 1`` (a bounded
  density, vanishing at 1: non-matching links are cut at the floor, not piled
  onto it), and never a score of exactly 1;
* optionally, whether the pair agrees on any match-key level
  (`keylinks.agreement_levels` >= 0), a Bernoulli feature per class, taken as
  independent of the score within each class. Only "any level" is used: per
  level, agreement on the strictest key and a score of exactly 1 are one and
  the same event, and EM then splits "exact" from "inexact" instead of matches
  from non-matches. (`estimate_output_quality` does not use it: records a
  match-key could link are linked by it, and the rest agree on no level.)

Beta parameters are fitted by weighted maximum likelihood (a concave problem,
solved by projected Newton steps), which follows the long left tail of the
match scores far better than matching moments. Posteriors are made
non-decreasing in the score at every E-step (see `_monotone`): two betas can
cross twice, and without this a few links just above the floor (decoys, say)
were read as matches and moved the chosen threshold from 0.74 to 0.50 on a
10,000-person sample.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from headcount.linkage.beta import (
    MAX_SHAPE,
    MIN_SHAPE,
    MIN_WEIGHT,
    beta_logpdf,
    weighted_beta,
)

__all__ = ["DEFAULT_FLOOR", "ScoreMixture", "check_agreement", "fit_mixture", "prepare_scores"]

log = logging.getLogger(__name__)

DEFAULT_FLOOR = 0.5
# x is clipped into [_EPS, 1 - _EPS] so log-densities stay finite for scores
# at the floor; 1e-3 of the score range is below the scores' own spacing (one
# bit in a 1024-bit filter moves a Dice score by about 0.002).
_EPS = 1e-3


@dataclass(frozen=True, slots=True)
class ScoreMixture:
    """A fitted two-component model of link scores (see the module docstring).

    Attributes:
        floor: lowest score the model covers, in (0, 1).
        match_share: prior probability that a link is a match, in (0, 1).
        exact_share: probability that a match scores exactly 1, in [0, 1].
        match_shape: ``(a_m, b_m)`` of the matches' beta density, ``a_m >= 1``.
        nonmatch_shape: ``(a_u, b_u)`` of the non-matches' beta density, both >= 1.
        agree_match: P(agrees on some match-key level | match) in (0, 1), or
            ``None`` for a model without the agreement feature.
        agree_nonmatch: the same for non-matches; ``None`` exactly when
            ``agree_match`` is.
        converged: whether EM met its tolerance.
        iterations: EM iterations run, >= 0.

    Raises:
        ValueError: a parameter is out of range, or only one agreement
            probability is given.
    """

    floor: float
    match_share: float
    exact_share: float
    match_shape: tuple[float, float]
    nonmatch_shape: tuple[float, float]
    agree_match: float | None = None
    agree_nonmatch: float | None = None
    converged: bool = False
    iterations: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.floor < 1.0:
            raise ValueError("floor must be in (0, 1)")
        if not 0.0 < self.match_share < 1.0:
            raise ValueError("match_share must be in (0, 1)")
        if not 0.0 <= self.exact_share <= 1.0:
            raise ValueError("exact_share must be in [0, 1]")
        for shape in (self.match_shape, self.nonmatch_shape):
            if len(shape) != 2 or not all(MIN_SHAPE <= v <= MAX_SHAPE for v in shape):
                raise ValueError(f"beta shapes must be pairs in [{MIN_SHAPE}, {MAX_SHAPE}]")
        if (self.agree_match is None) != (self.agree_nonmatch is None):
            raise ValueError("give both agreement probabilities or neither")
        for p in (self.agree_match, self.agree_nonmatch):
            if p is not None and not 0.0 < p < 1.0:
                raise ValueError("agreement probabilities must be in (0, 1)")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")

    def log_likelihood_ratio(self, scores: np.ndarray) -> np.ndarray:
        """log P(score | match) / P(score | non-match) for each score, without
        the shares: +inf at exactly 1 (never a non-match). For a model without
        the agreement feature.

        Raises:
            ValueError: scores outside [floor, 1], or a model with the feature.
        """
        if self.agree_match is not None:
            raise ValueError("log_likelihood_ratio is for a model without agreement")
        x, exact = prepare_scores(scores, self.floor)
        log_m, log_u = _log_joint(self, np.log(x), np.log1p(-x), exact, None)
        shares = math.log(self.match_share) - math.log1p(-self.match_share)
        with np.errstate(invalid="ignore"):
            out: np.ndarray = np.where(exact, np.inf, log_m - log_u - shares)
        return out

    def posterior(self, scores: np.ndarray, agreement: np.ndarray | None = None) -> np.ndarray:
        """P(match | score[, agreement]) for each score, as a float64 array.

        Made non-decreasing in the score (within each agreement value) the same
        way EM does, over the scores given (see `_monotone`).

        Raises:
            ValueError: scores outside [floor, 1], or ``agreement`` missing for
                a model with the feature (or given to one without), or of the
                wrong shape.
        """
        x, exact = prepare_scores(scores, self.floor)
        agrees = check_agreement(agreement, len(x), "agreement")
        if (agrees is None) != (self.agree_match is None):
            raise ValueError("pass agreement exactly when the model was fitted with it")
        log_m, log_u = _log_joint(self, np.log(x), np.log1p(-x), exact, agrees)
        raw = np.exp(log_m - np.logaddexp(log_m, log_u))
        return _monotone(raw, _descending_groups(x, agrees))


def fit_mixture(
    scores: np.ndarray,
    floor: float = DEFAULT_FLOOR,
    *,
    nonmatch_scores: np.ndarray | None = None,
    agreement: np.ndarray | None = None,
    nonmatch_agreement: np.ndarray | None = None,
    max_iterations: int = 1000,
    tolerance: float = 1e-7,
    match_shape: tuple[float, float] | None = None,
) -> tuple[ScoreMixture, np.ndarray]:
    """Fit the mixture by EM; return it and each score's posterior match probability.

    Args:
        scores: Dice scores of the links to classify, each in [floor, 1], not
            all exactly 1.
        floor: the candidate floor the scores were cut at, in (0, 1).
        nonmatch_scores: optional scores in [floor, 1] known to be non-matches
            (see `runner_up_scores`); they shape the non-match component only.
            Without them the non-match mean is held at or below the middle of
            [floor, 1], which keeps EM from the degenerate fit described in
            `headcount.linkage.quality` but is a weaker guard.
        agreement: optional bool per score: does the pair agree on any
            match-key level.
        nonmatch_agreement: bool per non-match score; required when both
            ``agreement`` and ``nonmatch_scores`` are given.
        max_iterations: EM iteration limit, >= 1.
        tolerance: stop when no posterior moves by more than this, > 0.
        match_shape: optional ``(a_m, b_m)`` of the matches' beta, held fixed
            (``a_m >= 1``, ``b_m > 0``): EM then fits only the shares and the
            non-match component. For links too few to show what a match
            scores (`output_quality.pooled_match_shape`).

    Raises:
        ValueError: on empty scores, scores outside [floor, 1], every score
            exactly 1, a bad floor, misaligned or missing agreement arrays, a
            bad ``match_shape``, or bad limits.
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise ValueError("max_iterations must be a positive int")
    if max_iterations < 1:
        raise ValueError("max_iterations must be a positive int")
    if not tolerance > 0.0:
        raise ValueError("tolerance must be > 0")
    if match_shape is not None and not (
        len(match_shape) == 2
        and 1.0 <= match_shape[0] <= MAX_SHAPE
        and MIN_SHAPE <= match_shape[1] <= MAX_SHAPE
    ):
        raise ValueError(f"match_shape must be (a, b) with a in [1, {MAX_SHAPE}], b >= {MIN_SHAPE}")
    x, exact = prepare_scores(scores, floor)
    if bool(exact.all()):
        raise ValueError("every score is exactly 1: nothing to tell matches from non-matches")
    agrees = check_agreement(agreement, len(x), "agreement")
    anchors = _Anchors.build(nonmatch_scores, nonmatch_agreement, floor, agrees is not None)

    log_x, log_1mx = np.log(x), np.log1p(-x)
    descending = _descending_groups(x, agrees)
    # Start from "matches are the upper half of the range", softened so that
    # neither component begins empty.
    gamma = np.where(exact, 1.0, np.where(x > 0.5, 0.9, 0.1))
    fixed = match_shape is not None
    start = (float(match_shape[0]), float(match_shape[1])) if match_shape else (5.0, 1.0)
    model = ScoreMixture(floor, 0.5, 0.5, start, (1.0, 5.0))
    model = _m_step(model, gamma, log_x, log_1mx, exact, agrees, anchors, fixed)
    converged = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        log_m, log_u = _log_joint(model, log_x, log_1mx, exact, agrees)
        updated = _monotone(np.exp(log_m - np.logaddexp(log_m, log_u)), descending)
        change = float(np.max(np.abs(updated - gamma)))
        gamma = updated
        model = _m_step(model, gamma, log_x, log_1mx, exact, agrees, anchors, fixed)
        if change < tolerance:
            converged = True
            break
    model = dataclasses.replace(model, converged=converged, iterations=iterations)
    log.debug(
        "quality EM: %d scores, %d anchors, %d iterations, converged=%s",
        len(x),
        anchors.size,
        iterations,
        converged,
    )
    return model, gamma


def prepare_scores(scores: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(x clipped into [eps, 1 - eps], exact-1 mask) after range checks."""
    if isinstance(floor, bool) or not isinstance(floor, float | int) or not 0.0 < floor < 1.0:
        raise ValueError("floor must be a number in (0, 1)")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("scores must be a non-empty 1-D array")
    if not bool(np.all((s >= floor) & (s <= 1.0))):  # also rejects NaN
        raise ValueError("every score must lie in [floor, 1]")
    exact = s >= 1.0
    x = np.clip((s - floor) / (1.0 - floor), _EPS, 1.0 - _EPS)
    return x, exact


def check_agreement(values: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values)
    if array.shape != (n,) or array.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool array with one entry per score")
    return array


@dataclass(frozen=True, slots=True)
class _Anchors:
    """Known non-match scores (as log x, log 1-x) and their agreement flags."""

    log_x: np.ndarray
    log_1mx: np.ndarray
    agrees: np.ndarray | None

    @property
    def size(self) -> int:
        return len(self.log_x)

    @classmethod
    def build(
        cls,
        scores: np.ndarray | None,
        agreement: np.ndarray | None,
        floor: float,
        with_agreement: bool,
    ) -> _Anchors:
        if scores is None or len(scores) == 0:
            if agreement is not None and len(agreement):
                raise ValueError("nonmatch_agreement given without nonmatch_scores")
            empty = np.empty(0, dtype=np.float64)
            flags = np.empty(0, dtype=np.bool_) if with_agreement else None
            return cls(empty, empty, flags)
        x, exact = prepare_scores(scores, floor)
        if bool(exact.any()):
            raise ValueError("a known non-match cannot score exactly 1")
        agrees = check_agreement(agreement, len(x), "nonmatch_agreement")
        if with_agreement and agrees is None:
            raise ValueError("nonmatch_agreement is required with agreement and nonmatch_scores")
        if not with_agreement and agrees is not None:
            raise ValueError("nonmatch_agreement given without agreement")
        return cls(np.log(x), np.log1p(-x), agrees)


def _descending_groups(x: np.ndarray, agrees: np.ndarray | None) -> list[np.ndarray]:
    """Positions in descending score order, one array per agreement value."""
    if agrees is None:
        return [np.argsort(-x, kind="stable")]
    groups: list[np.ndarray] = []
    for value in (False, True):
        members = np.flatnonzero(agrees == value)
        groups.append(members[np.argsort(-x[members], kind="stable")])
    return groups


def _monotone(gamma: np.ndarray, descending: list[np.ndarray]) -> np.ndarray:
    """Cap each posterior by the smallest posterior of any higher score (per group).

    A higher Dice score never makes a match less likely, but two beta
    densities can cross twice: near the floor both are tiny and the match
    density may be the less tiny one. Left alone, a few links just above the
    floor (decoys, chance pairs) are then taken as matches, widen the match
    component and drag real non-matches along with them. The running minimum
    from the top removes exactly that inversion and leaves a monotone
    posterior untouched.
    """
    out = gamma.copy()
    for order in descending:
        out[order] = np.minimum.accumulate(gamma[order])
    return out


def _log_joint(
    model: ScoreMixture,
    log_x: np.ndarray,
    log_1mx: np.ndarray,
    exact: np.ndarray,
    agrees: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """log P(match, data) and log P(non-match, data) per observation."""
    pi, q = model.match_share, model.exact_share
    continuous_m = math.log(pi) + _log1m(q) + beta_logpdf(log_x, log_1mx, *model.match_shape)
    log_m = np.where(exact, math.log(pi) + _log(q), continuous_m)
    # Non-matches never score exactly 1: identical encodings of two different
    # children would need identical names, birth dates and postcodes.
    continuous_u = math.log1p(-pi) + beta_logpdf(log_x, log_1mx, *model.nonmatch_shape)
    log_u = np.where(exact, -np.inf, continuous_u)
    if agrees is not None:
        assert model.agree_match is not None and model.agree_nonmatch is not None
        log_m = log_m + np.where(
            agrees, math.log(model.agree_match), math.log1p(-model.agree_match)
        )
        log_u = log_u + np.where(
            agrees, math.log(model.agree_nonmatch), math.log1p(-model.agree_nonmatch)
        )
    return log_m, log_u


def _m_step(
    previous: ScoreMixture,
    gamma: np.ndarray,
    log_x: np.ndarray,
    log_1mx: np.ndarray,
    exact: np.ndarray,
    agrees: np.ndarray | None,
    anchors: _Anchors,
    fixed_match: bool = False,
) -> ScoreMixture:
    """Weighted maximum-likelihood parameters given posteriors ``gamma``
    (the match shape kept as it is with ``fixed_match``)."""
    n = len(gamma)
    match_weight = float(gamma.sum())
    # Clamped away from 0 and 1 so neither component can vanish: a mixture
    # with an empty component has no gradient to recover from.
    pi = min(max(match_weight / n, 1.0 / (n + 1)), n / (n + 1))
    q = float(gamma[exact].sum()) / match_weight if match_weight > MIN_WEIGHT else 0.0
    inexact = ~exact
    match_shape = (
        previous.match_shape
        if fixed_match
        else weighted_beta(
            gamma[inexact],
            log_x[inexact],
            log_1mx[inexact],
            previous.match_shape,
            a_min=1.0,
            b_min=MIN_SHAPE,
        )
    )
    nonmatch_shape = weighted_beta(
        np.concatenate((1.0 - gamma[inexact], np.ones(anchors.size))),
        np.concatenate((log_x[inexact], anchors.log_x)),
        np.concatenate((log_1mx[inexact], anchors.log_1mx)),
        previous.nonmatch_shape,
        a_min=1.0,
        b_min=1.0,
        mean_at_most_half=anchors.size == 0,
    )
    agree_m = agree_u = None
    if agrees is not None:
        assert anchors.agrees is not None
        # One pseudo-count each way (Laplace): a class whose links all agree,
        # or none do, keeps a probability strictly inside (0, 1).
        agree_m = (float(gamma[agrees].sum()) + 1.0) / (match_weight + 2.0)
        nonmatch_agreeing = float((1.0 - gamma)[agrees].sum()) + float(anchors.agrees.sum())
        nonmatch_weight = float(n) - match_weight + anchors.size
        agree_u = (nonmatch_agreeing + 1.0) / (nonmatch_weight + 2.0)
    return ScoreMixture(
        floor=previous.floor,
        match_share=pi,
        exact_share=min(1.0, max(0.0, q)),
        match_shape=match_shape,
        nonmatch_shape=nonmatch_shape,
        agree_match=agree_m,
        agree_nonmatch=agree_u,
    )


def _log(value: float) -> float:
    return math.log(value) if value > 0.0 else -math.inf


def _log1m(value: float) -> float:
    return math.log1p(-value) if value < 1.0 else -math.inf
