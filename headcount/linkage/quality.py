"""Match quality without ground truth: a two-component mixture fitted to Dice scores.

In production nobody knows which links are right, but the scores carry the
answer in aggregate: true matches pile up near 1, non-matches near the floor,
and a model of the two piles says how many non-matches sit above a threshold
(precision) and how many matches fall below it (recall).

What a run writes (`estimate_output_quality`, used by `engine.link_parties`)
----------------------------------------------------------------------------

For a pair of parties a run writes two kinds of link: match-key links, taken
first, and then CLK links between the records match-keys left, greedily one
to one, at Dice >= the threshold. The estimate follows the same steps on a
sample of the smaller side, each sampled record scored against every record
of the other side that no match-key link took:

* **Match-key links are counted as true.** They agree exactly on names and
  a date of birth or a reference number; a wrong one (namesakes born on one
  day at one address) scores like a right one, so no estimate from scores
  could see it. On the synthetic profiles every one was right.
* **The CLK links of the other records** (each record's best candidate, one
  to one) are fitted by the mixture below; each gets its posterior ``g``.
* **Anchors** show the fit what a non-matching link scores: each record
  whose partner is known (held by a match-key, or linked at exactly 1, which
  a non-match never scores) takes its best candidate that no link holds with
  a higher score (`_anchors`). That is what its link would be without its
  partner, competition included: records with many bits set are the best
  chance candidate of many records at once, and anchors that ignored this
  ran 0.02 above the non-matching links they stand for.
* **Precision** at ``t`` is ``(K + sum of g over links >= t) / (K + links
  >= t)``, ``K`` the sampled records a match-key links.
* **Recall** is relative to every sampled record with a true partner on the
  other side: ``K``, plus the sum of ``g`` over *all* CLK links (a match
  whose link scores below ``t`` is a match not written), plus the partners
  no record links to at all (`_lost_matches`: a partner outscored by the
  record's best chance pair; each true link at ``s`` stands for ``1 / G(s)``
  partners scoring about ``s``, ``G`` the chance of beating the best
  non-match). With the floor at 0.5, below any record's best chance pair,
  matches scoring under the floor are in this last group too.
* **The automatic threshold** is the multiple of 0.001 maximising the
  estimated F1 (``2 precision recall / (precision + recall)``), at least
  `AUTO_MARGIN` above the floor, where the non-match component is least sure.

What it misses, measured against the truth of what link-files wrote (the UK
synthetic profile it was built on; the non-UK profile of
`headcount.tools.intl_profile`, 2,000-20,000 people, three seeds; the UK
people re-recorded with `headcount.tools.corrupt`, heavy errors and swapped
names in one file): precision within 0.6 of a point, recall 0.0-1.2 of a
point high (intl 0.4-0.7, UK 0.0-0.9, heavy-error 1.0-1.2). Recall runs high
because some true matches score among the chance pairs (0.55-0.65), where a
beta's left tail puts too few of them; their number is not identifiable from
the scores alone (runner-up gaps, per-record chance tails and a flat extra
match component were tried: each moved the estimate by profile-dependent
amounts, none consistently toward the truth). Held out (FEBRL4, 5,000 x
5,000): precision and recall within 0.3 of a point at the automatic threshold.

The sample (`engine.QUALITY_SAMPLE_ROWS` records) competes only within itself
for candidates: on a large side its non-matching links score a little higher
than the full run's, so precision errs low there. Each pair of parties is
estimated alone: with three or more, the pairs a cluster joins through a
third party are not in its estimate (UK profile, four departments: up to 3.6
points of precision on a pair of a hundred people, under 1 on larger pairs).

The model
---------

On ``x = (score - floor) / (1 - floor)``:

* matches: probability ``exact_share`` of a score of exactly 1 (identical
  encodings; most true matches under the default schema), otherwise
  ``Beta(a_m, b_m)`` with ``a_m >= 1`` (density vanishing at the floor);
* non-matches: ``Beta(a_u, b_u)`` with ``a_u >= 1`` and ``b_u >= 1`` (a bounded
  density, vanishing at 1: non-matching links are cut at the floor, not piled
  onto it), and never a score of exactly 1;
* optionally, whether the pair agrees on any match-key level
  (`matchkeys.agreement_levels` >= 0), a Bernoulli feature per class, taken as
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

The CLK links alone (`estimate_link_quality`, `estimate_quality`)
-----------------------------------------------------------------

The older estimate describes the one-to-one CLK links of all candidate pairs
at the floor, match-key links left out, with recall relative to the matches
among those links:

* **The one-to-one links**, which `solve.match_one_to_one` makes from *all*
  candidate pairs at a low floor (0.5 by default, from
  ``dice.score_pairs(left, right, 0.5)``), not the raw candidate pairs. The
  greedy solver takes pairs by descending score, so its links from the pairs
  >= t are exactly its links from the pairs >= floor that score >= t: one fit
  at the floor describes the link set at every threshold above it. Raw pairs
  are the wrong population: for every true match there are hundreds of chance
  pairs just above 0.5, and a mixture fitted to them spends itself on that
  bulk.
* **A floor well below any sensible threshold**, so that the non-matching
  links (each unmatched record's best non-match, 0.5-0.75 with the default
  schema) are seen whole and not only as a tail.
* **Known non-matches as anchors.** For each record of the smaller side, its
  best-scoring candidate other than its own link (its *runner-up*) is a
  non-match: a department holds each child once, so a record has at most one
  true partner. Without them a beta pair fits the data better by letting the
  non-match component swallow the matches' left tail (measured: estimated
  precision 0.08 too low on 2,000-person samples). Runner-ups are second-best
  chance scores for records whose link is a non-match, so they run a little
  low; `estimate_output_quality` prefers the anchors above.

Blocking: LSH blocking tuned for a threshold of 0.8 rarely puts pairs scoring
0.5-0.7 in one block, so candidates from `blocking.candidate_pairs_blocked`
under-represent exactly the non-matching links these fits need. Fit on
unblocked candidates (``dice.score_pairs`` or ``dice.best_pairs``), if need
be for a random sample of the smaller side's records against all of the
other side.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from headcount.linkage.dice import Candidates
from headcount.linkage.solve import match_one_to_one

__all__ = [
    "AUTO_MARGIN",
    "DEFAULT_FLOOR",
    "QualityEstimate",
    "ScoreMixture",
    "estimate_link_quality",
    "estimate_output_quality",
    "estimate_quality",
    "fit_mixture",
    "runner_up_scores",
]

log = logging.getLogger(__name__)

DEFAULT_FLOOR = 0.5
# An automatic threshold is never within this of the floor: the fit's
# non-match component is cut at the floor, and is least sure just above it.
AUTO_MARGIN = 0.05
_GRID_STEPS = 1000  # automatic thresholds are multiples of 1 / _GRID_STEPS
# Below this many anchors from records whose partner is known, runner-ups
# join them (`estimate_output_quality`).
MIN_ANCHORS = 50
# Grid for the non-match distribution in `_lost_matches`, and the least
# chance of beating the best non-match it believes.
_GRID = 2000
_MIN_BEAT = 0.05
# x is clipped into [_EPS, 1 - _EPS] so log-densities stay finite for scores
# at the floor; 1e-3 of the score range is below the scores' own spacing (one
# bit in a 1024-bit filter moves a Dice score by about 0.002).
_EPS = 1e-3
_MIN_SHAPE, _MAX_SHAPE = 1e-2, 1e5
_MIN_WEIGHT = 1e-9


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """Estimated quality of the links kept at a threshold.

    Attributes:
        threshold: Dice score at or above which CLK links are kept, in [floor, 1].
        est_precision: estimated share of kept links that are true matches, [0, 1].
        est_recall: estimated share of the true matches that are kept, [0, 1]:
            of every record's true match (`estimate_output_quality`), or of
            the true matches among the fitted links (the link-only estimates).
        est_f1: harmonic mean of the two, [0, 1].
        match_share: estimated share of the records estimated on that have a
            true match (`estimate_output_quality`), or of the fitted links
            that are matches (the link-only estimates), [0, 1].
        converged: whether EM met its tolerance within the iteration limit.
        iterations: EM iterations run, >= 0.

    Raises:
        ValueError: a value is outside its range or NaN.
    """

    threshold: float
    est_precision: float
    est_recall: float
    est_f1: float
    match_share: float
    converged: bool
    iterations: int

    def __post_init__(self) -> None:
        for name in ("threshold", "est_precision", "est_recall", "est_f1", "match_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, float | int | np.floating):
                raise ValueError(f"{name} must be a number in [0, 1]")
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(f"{name} must be in [0, 1]")
            object.__setattr__(self, name, float(value))
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ValueError("iterations must be a non-negative int")
        if self.iterations < 0:
            raise ValueError("iterations must be a non-negative int")
        if not isinstance(self.converged, bool):
            raise ValueError("converged must be a bool")


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
            if len(shape) != 2 or not all(_MIN_SHAPE <= v <= _MAX_SHAPE for v in shape):
                raise ValueError(f"beta shapes must be pairs in [{_MIN_SHAPE}, {_MAX_SHAPE}]")
        if (self.agree_match is None) != (self.agree_nonmatch is None):
            raise ValueError("give both agreement probabilities or neither")
        for p in (self.agree_match, self.agree_nonmatch):
            if p is not None and not 0.0 < p < 1.0:
                raise ValueError("agreement probabilities must be in (0, 1)")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")

    def posterior(self, scores: np.ndarray, agreement: np.ndarray | None = None) -> np.ndarray:
        """P(match | score[, agreement]) for each score, as a float64 array.

        Made non-decreasing in the score (within each agreement value) the same
        way EM does, over the scores given (see `_monotone`).

        Raises:
            ValueError: scores outside [floor, 1], or ``agreement`` missing for
                a model with the feature (or given to one without), or of the
                wrong shape.
        """
        x, exact = _prepare(scores, self.floor)
        agrees = _agreement(agreement, len(x), "agreement")
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
            the module docstring but is a weaker guard.
        agreement: optional bool per score: does the pair agree on any
            match-key level.
        nonmatch_agreement: bool per non-match score; required when both
            ``agreement`` and ``nonmatch_scores`` are given.
        max_iterations: EM iteration limit, >= 1.
        tolerance: stop when no posterior moves by more than this, > 0.

    Raises:
        ValueError: on empty scores, scores outside [floor, 1], every score
            exactly 1, a bad floor, misaligned or missing agreement arrays, or
            bad limits.
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise ValueError("max_iterations must be a positive int")
    if max_iterations < 1:
        raise ValueError("max_iterations must be a positive int")
    if not tolerance > 0.0:
        raise ValueError("tolerance must be > 0")
    x, exact = _prepare(scores, floor)
    if bool(exact.all()):
        raise ValueError("every score is exactly 1: nothing to tell matches from non-matches")
    agrees = _agreement(agreement, len(x), "agreement")
    anchors = _Anchors.build(nonmatch_scores, nonmatch_agreement, floor, agrees is not None)

    log_x, log_1mx = np.log(x), np.log1p(-x)
    descending = _descending_groups(x, agrees)
    # Start from "matches are the upper half of the range", softened so that
    # neither component begins empty.
    gamma = np.where(exact, 1.0, np.where(x > 0.5, 0.9, 0.1))
    model = ScoreMixture(floor, 0.5, 0.5, (5.0, 1.0), (1.0, 5.0))
    model = _m_step(model, gamma, log_x, log_1mx, exact, agrees, anchors)
    converged = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        log_m, log_u = _log_joint(model, log_x, log_1mx, exact, agrees)
        updated = _monotone(np.exp(log_m - np.logaddexp(log_m, log_u)), descending)
        change = float(np.max(np.abs(updated - gamma)))
        gamma = updated
        model = _m_step(model, gamma, log_x, log_1mx, exact, agrees, anchors)
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


def estimate_quality(
    scores: np.ndarray,
    floor: float = DEFAULT_FLOOR,
    *,
    nonmatch_scores: np.ndarray | None = None,
    agreement: np.ndarray | None = None,
    nonmatch_agreement: np.ndarray | None = None,
    threshold: float | None = None,
    max_iterations: int = 1000,
) -> QualityEstimate:
    """Estimate precision and recall of links, picking the threshold if not given.

    Args:
        scores: Dice scores of the one-to-one links made from all candidates at
            ``floor`` (see the module docstring for why links, not raw pairs).
        floor: the candidate floor, in (0, 1), well below any threshold.
        nonmatch_scores, agreement, nonmatch_agreement: see `fit_mixture`.
        threshold: estimate at this threshold, in [floor, 1]; when ``None``,
            the observed score maximising estimated F1 is chosen (ties go to
            the highest such score, the smaller link set).
        max_iterations: EM iteration limit.

    Returns:
        The estimate at the chosen or given threshold.

    Raises:
        ValueError: as `fit_mixture`, or a threshold outside [floor, 1].
    """
    if threshold is not None and not floor <= threshold <= 1.0:
        raise ValueError("threshold must be in [floor, 1]")
    model, gamma = fit_mixture(
        scores,
        floor,
        nonmatch_scores=nonmatch_scores,
        agreement=agreement,
        nonmatch_agreement=nonmatch_agreement,
        max_iterations=max_iterations,
    )
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, g = s[order], gamma[order]
    kept_matches = np.cumsum(g)
    precision = kept_matches / np.arange(1, len(s) + 1, dtype=np.float64)
    recall = kept_matches / max(float(g.sum()), _MIN_WEIGHT)
    f1 = 2.0 * precision * recall / np.maximum(precision + recall, _MIN_WEIGHT)
    if threshold is None:
        # Only the last of a run of equal scores is a real cut: a threshold
        # keeps every link with that score or none of them.
        cut = np.r_[s[1:] != s[:-1], True]
        k = int(np.argmax(np.where(cut, f1, -1.0)))
        chosen = float(s[k])
    else:
        chosen = float(threshold)
        k = int(np.searchsorted(-s, -chosen, side="right")) - 1
    if k < 0:  # the given threshold keeps no link
        p, r, f = 1.0, 0.0, 0.0
    else:
        p, r, f = float(precision[k]), float(recall[k]), float(f1[k])
    return QualityEstimate(
        threshold=chosen,
        est_precision=min(1.0, p),
        est_recall=min(1.0, r),
        est_f1=min(1.0, f),
        match_share=model.match_share,
        converged=model.converged,
        iterations=model.iterations,
    )


def runner_up_scores(candidates: Candidates, links: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Each smaller-side record's best candidate score other than its own link.

    The smaller side is the one with fewer distinct records among the
    candidates (left on a tie). Records whose only candidate is their link
    have no runner-up.

    Returns:
        ``(scores, positions)``: the runner-up scores, and their row positions
        in ``candidates`` (to look up per-pair features), in record order.
    """
    left_side = len(np.unique(candidates.left)) <= len(np.unique(candidates.right))
    own, other = (
        (candidates.left, candidates.right) if left_side else (candidates.right, candidates.left)
    )
    link_own, link_other = (links.left, links.right) if left_side else (links.right, links.left)
    is_link = np.isin(_pair_ids(own, other), _pair_ids(link_own, link_other))
    rest = np.flatnonzero(~is_link)
    # Best first: candidates come sorted by (score desc, left, right); sort
    # again so the result does not rely on it.
    rest = rest[np.lexsort((own[rest], -candidates.score[rest]))]
    _, first = np.unique(own[rest], return_index=True)
    positions = rest[first]
    return candidates.score[positions], positions


def estimate_link_quality(
    candidates: Candidates,
    floor: float = DEFAULT_FLOOR,
    *,
    agreement: np.ndarray | None = None,
    threshold: float | None = None,
) -> QualityEstimate:
    """Solve one-to-one links from candidates and estimate their quality.

    Args:
        candidates: every pair scoring >= ``floor``, as from
            ``dice.score_pairs(left, right, floor)``.
        floor: the floor ``candidates`` were cut at, in (0, 1).
        agreement: optional bool per candidate pair: do the two records agree
            on any match-key level (``matchkeys.agreement_levels(...) >= 0``).
        threshold: as for `estimate_quality`.

    Raises:
        ValueError: as `estimate_quality`, or ``agreement`` is not one bool per
            candidate, or there are no candidates.
    """
    if len(candidates) == 0:
        raise ValueError("no candidate pairs to estimate from")
    agrees = _agreement(agreement, len(candidates), "agreement")
    links = match_one_to_one(candidates)
    runner_ups, positions = runner_up_scores(candidates, links)
    link_agrees = runner_agrees = None
    if agrees is not None:
        ids = _pair_ids(candidates.left, candidates.right)
        order = np.argsort(ids, kind="stable")
        found = order[np.searchsorted(ids[order], _pair_ids(links.left, links.right))]
        link_agrees = agrees[found]
        runner_agrees = agrees[positions]
    return estimate_quality(
        links.score,
        floor,
        nonmatch_scores=runner_ups,
        agreement=link_agrees,
        nonmatch_agreement=runner_agrees,
        threshold=threshold,
    )


def estimate_output_quality(
    candidates: Candidates,
    keyed: np.ndarray,
    floor: float = DEFAULT_FLOOR,
    *,
    threshold: float,
    auto_threshold: bool = False,
    lowest_threshold: float | None = None,
) -> QualityEstimate:
    """Estimate precision and recall of what a run writes: match-key links plus CLK links.

    Args:
        candidates: for each sampled record of one side (``left``, numbered
            ``0 .. len(keyed) - 1``), its best candidates scoring >= ``floor``
            among the other side's records that no match-key link took
            (``right``: any ids of those records).
        keyed: bool per sampled record: does a match-key link hold it.
        floor: the floor ``candidates`` were cut at, in (0, 1).
        threshold: the Dice threshold CLK links are cut at, in [floor, 1].
        auto_threshold: instead pick the threshold maximising the estimated
            F1 among multiples of 0.001 >= ``lowest_threshold`` (ties to the
            highest); ``threshold`` is kept when no link scores that high.
        lowest_threshold: the lowest threshold picked, in [floor, 1]; default
            ``floor + AUTO_MARGIN``.

    Returns:
        The estimate at the threshold used (its ``threshold``); see the module
        docstring for what it counts and how.

    Raises:
        ValueError: ``keyed`` is not a non-empty bool array, a candidate names
            a sampled record outside it, or a threshold is out of range.
    """
    _prepare(np.array([floor]), floor)  # checks the floor
    flags = np.asarray(keyed)
    if flags.ndim != 1 or flags.dtype != np.bool_ or len(flags) == 0:
        raise ValueError("keyed must be a non-empty bool array, one entry per sampled record")
    if len(candidates) and int(candidates.left.max()) >= len(flags):
        raise ValueError("a candidate names a sampled record outside keyed")
    if not floor <= threshold <= 1.0:
        raise ValueError("threshold must be in [floor, 1]")
    lowest = floor + AUTO_MARGIN if lowest_threshold is None else lowest_threshold
    if not floor <= lowest <= 1.0:
        raise ValueError("lowest_threshold must be in [floor, 1]")
    parts = _output_parts(candidates, flags, floor)
    return _output_estimate(parts, threshold, lowest if auto_threshold else None)


@dataclass(frozen=True, slots=True)
class _OutputParts:
    """What `estimate_output_quality` fits and sums (counts are per sample)."""

    keyed: int  # sampled records a match-key links, each taken as a true link
    records: int  # sampled records
    scores: np.ndarray  # CLK link score of each other record that has one, descending
    gamma: np.ndarray  # posterior that each of those links is a true match
    lost: float  # expected true matches that are no record's link
    model: ScoreMixture | None


def _output_parts(candidates: Candidates, keyed: np.ndarray, floor: float) -> _OutputParts:
    rows = len(keyed)
    k = int(keyed.sum())
    open_rows = ~keyed[candidates.left]
    free = Candidates(
        candidates.left[open_rows], candidates.right[open_rows], candidates.score[open_rows]
    )
    links = match_one_to_one(free)
    scores = np.sort(links.score)[::-1]
    if not len(scores) or bool(np.all(scores >= 1.0)):
        gamma = np.ones(len(scores))
        return _OutputParts(k, rows, scores, gamma, 0.0, None)
    # Records whose partner is known: a match-key holds them, or their link
    # scores exactly 1 (identical encodings; never a non-match).
    sure = keyed.copy()
    sure[links.left[links.score >= 1.0]] = True
    anchors = _anchors(candidates, sure, links)
    if len(anchors) < MIN_ANCHORS:
        # Too few such records to show what a non-match looks like: add the
        # runner-ups of the others (second-best chance scores, a little low
        # for a non-matching link).
        runner_ups, _ = runner_up_scores(free, links)
        anchors = np.concatenate((anchors, runner_ups[runner_ups < 1.0]))
    model, gamma = fit_mixture(scores, floor, nonmatch_scores=anchors)
    lost = _lost_matches(model, scores, gamma)
    return _OutputParts(k, rows, scores, gamma, lost, model)


def _anchors(candidates: Candidates, sure: np.ndarray, links: Candidates) -> np.ndarray:
    """What the CLK link of each record whose partner is known would score
    without that partner: a non-match.

    Its best candidate but the partner is a chance pair (or a relative);
    but the other records' links compete for the same candidates, and a
    record whose best candidate was taken by a better link gets its next
    best. Records with many bits set are the best chance candidate of many
    records at once, so this matters: without it, anchors ran 0.02 above
    the non-matching links they stand for (intl profile, 5,000 people). So
    each such record takes its best candidate that no link holds with a
    higher score, as if it alone were added to the one-to-one solve; its
    own partner (taken by a match-key, or its own link at 1) never
    qualifies.
    """
    on_sure = sure[candidates.left]
    left, right = candidates.left[on_sure], candidates.right[on_sure]
    score = candidates.score[on_sure]
    if len(links):
        held = np.zeros(int(max(right.max(initial=0), links.right.max())) + 1)
        held[links.right] = links.score
        free = score > held[right]
        left, score = left[free], score[free]
    order = np.lexsort((-score, left))
    left, score = left[order], score[order]
    best = score[np.r_[True, left[1:] != left[:-1]]] if len(left) else score
    # A score of exactly 1 is a second record of the same person on the
    # other side, not a chance pair: it says nothing about non-matches.
    out: np.ndarray = best[best < 1.0]
    return out


def _lost_matches(model: ScoreMixture, scores: np.ndarray, gamma: np.ndarray) -> float:
    """Expected matches that are no record's link: the partner scored below a chance pair.

    A record's link is its true partner when the partner outscores the
    record's best non-match, which happens with probability ``G(s)`` for a
    partner scoring ``s`` (``G``: the non-match component's distribution).
    So each true link at ``s`` stands for ``1 / G(s)`` records with a
    partner scoring about ``s``, of whom ``1 / G(s) - 1`` lost theirs. Only
    links more likely matches than not are counted: below that the
    posterior rests on the far tail of the match component, and a sum of
    many small posteriors times large ``1 / G`` would be that tail's guess
    (measured: 7 lost partners where there was 1, on 61 links).
    """
    seen = (scores < 1.0) & (gamma >= 0.5)
    if not bool(seen.any()):
        return 0.0
    x, _ = _prepare(scores[seen], model.floor)
    grid = (np.arange(_GRID) + 0.5) / _GRID
    density = np.exp(_beta_logpdf(np.log(grid), np.log1p(-grid), *model.nonmatch_shape))
    cdf = np.cumsum(density) / density.sum()
    beaten = np.maximum(np.interp(x, grid, cdf), _MIN_BEAT)
    return float(np.sum(gamma[seen] * (1.0 - beaten) / beaten))


def _output_estimate(
    parts: _OutputParts, threshold: float, lowest: float | None
) -> QualityEstimate:
    """The estimate at ``threshold``, or at the best cut >= ``lowest`` when given."""
    s, g = parts.scores, parts.gamma
    k = float(parts.keyed)
    matches = k + float(g.sum()) + parts.lost
    kept = k + np.cumsum(g)
    precision = kept / (k + np.arange(1, len(s) + 1, dtype=np.float64))
    recall = kept / max(matches, _MIN_WEIGHT)
    f1 = 2.0 * precision * recall / np.maximum(precision + recall, _MIN_WEIGHT)
    chosen = float(threshold)
    if lowest is not None and bool((s >= lowest).any()):
        # A grid of round thresholds (Dice scores of 1024-bit filters are
        # some 0.002 apart, so 0.001 loses nothing), highest first so that
        # ties go to the smaller link set.
        grid = np.arange(_GRID_STEPS, math.ceil(lowest * _GRID_STEPS - 1e-9) - 1, -1)
        kept_at = np.searchsorted(-s, -grid / _GRID_STEPS, side="right") - 1
        scores = np.where(kept_at >= 0, f1[np.maximum(kept_at, 0)], -1.0)
        chosen = round(float(grid[int(np.argmax(scores))]) / _GRID_STEPS, 3)
    at = int(np.searchsorted(-s, -chosen, side="right")) - 1
    if at < 0:  # no CLK link kept: the match-key links alone
        p, r = 1.0, (k / matches if matches > _MIN_WEIGHT else 1.0)
    else:
        p, r = float(precision[at]), float(recall[at])
    p, r = min(1.0, p), min(1.0, r)
    model = parts.model
    return QualityEstimate(
        threshold=chosen,
        est_precision=p,
        est_recall=r,
        est_f1=2.0 * p * r / (p + r) if p + r > 0.0 else 0.0,
        match_share=min(1.0, matches / parts.records),
        converged=True if model is None else model.converged,
        iterations=0 if model is None else model.iterations,
    )


# --- internals --------------------------------------------------------------------


def _pair_ids(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    # Row indices are far below 2**31 (CLK matrices of that many rows would not
    # fit in memory), so one int64 holds both.
    ids: np.ndarray = left.astype(np.int64) << 32 | right.astype(np.int64)
    return ids


def _prepare(scores: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
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


def _agreement(values: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
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
        x, exact = _prepare(scores, floor)
        if bool(exact.any()):
            raise ValueError("a known non-match cannot score exactly 1")
        agrees = _agreement(agreement, len(x), "nonmatch_agreement")
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
    continuous_m = math.log(pi) + _log1m(q) + _beta_logpdf(log_x, log_1mx, *model.match_shape)
    log_m = np.where(exact, math.log(pi) + _log(q), continuous_m)
    # Non-matches never score exactly 1: identical encodings of two different
    # children would need identical names, birth dates and postcodes.
    continuous_u = math.log1p(-pi) + _beta_logpdf(log_x, log_1mx, *model.nonmatch_shape)
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
) -> ScoreMixture:
    """Weighted maximum-likelihood parameters given posteriors ``gamma``."""
    n = len(gamma)
    match_weight = float(gamma.sum())
    # Clamped away from 0 and 1 so neither component can vanish: a mixture
    # with an empty component has no gradient to recover from.
    pi = min(max(match_weight / n, 1.0 / (n + 1)), n / (n + 1))
    q = float(gamma[exact].sum()) / match_weight if match_weight > _MIN_WEIGHT else 0.0
    inexact = ~exact
    match_shape = _weighted_beta(
        gamma[inexact],
        log_x[inexact],
        log_1mx[inexact],
        previous.match_shape,
        a_min=1.0,
        b_min=_MIN_SHAPE,
    )
    nonmatch_shape = _weighted_beta(
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


def _beta_logpdf(log_x: np.ndarray, log_1mx: np.ndarray, a: float, b: float) -> np.ndarray:
    out: np.ndarray = (a - 1.0) * log_x + (b - 1.0) * log_1mx - _log_beta(a, b)
    return out


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _weighted_beta(
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
    a = min(max(start[0], a_min), _MAX_SHAPE)
    b = min(max(start[1], b_min), _MAX_SHAPE)
    total = float(weights.sum())
    if total <= _MIN_WEIGHT:
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
            new_a = min(max(a + scale * step_a, a_min), _MAX_SHAPE)
            new_b = min(max(b + scale * step_b, b_min), _MAX_SHAPE)
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
    a = min(max(start, lower), _MAX_SHAPE)
    for _ in range(100):
        grad = mean_log_sum - 2.0 * _digamma(a) + 2.0 * _digamma(2.0 * a)
        hess = 4.0 * _trigamma(2.0 * a) - 2.0 * _trigamma(a)  # < 0: concave
        new_a = min(max(a - grad / hess, lower), _MAX_SHAPE)
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
