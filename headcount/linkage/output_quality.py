"""The quality of what a run writes: match-key links plus CLK links, without ground truth.

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
* **Too few known partners** (under `MIN_ANCHORS`): a pair whose shared
  people are nearly all linked by match-keys has CLK links that are nearly
  all chance pairs, and runner-ups (second-best chance scores) as anchors
  run below them; a match component fitted there settles on their upper
  tail (education x justice on the federation benchmark: 88-123 "matches"
  among 466-508 chance links, recall 85-91 points low). What a true match
  scores is a property of the encoding and the errors, which the pairs of a
  run share; so such a pair borrows the match shape of the pairs that have
  enough (`pooled_match_shape`) and fits only the shares and its non-match
  component (basis ``"pooled"``). With nothing to borrow from (two files,
  or no pair with enough) the runner-ups stand in as before and the
  estimate says so (basis ``"unanchored"``).
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
names in one file, `bench_quality.py`'s harsh profile): precision within 0.6
of a point, recall 0.0-1.9 of a point high (intl 0.4-0.7, UK 0.0-0.9,
heavy-error 0.5-0.6 at 5,000 people, 1.8-1.9 at 20,000). Recall runs high
because some true matches score among the chance pairs (0.55-0.65), where a
beta's left tail puts too few of them; their number is not identifiable from
the scores alone (runner-up gaps, per-record chance tails and a flat extra
match component were tried: each moved the estimate by profile-dependent
amounts, none consistently toward the truth). On the harsh profile at 20,000
people, 46-50 true partners are lost outright (their record's best chance
pair outscores them, at 0.50-0.65) where `_lost_matches` counts about 1.
Also tried, none adopted: counting the lost partners of every link, not
only of links more likely matches than not (1.0-1.3 points high there, but
1.1-2.3 points low on 700-record samples: a flat posterior just above the
floor times ``1 / G``); inverse-probability weighting even with the true
links' labels (33 and 89 for 46 and 50 lost); a match beta for all
unkeyed matches times ``G`` (a match is a link only when it beats the best
chance pair), a flat extra match component under the same ``G``, and the
anchors' own smoothed distribution for the non-matches (none moved the
harsh error by more than 0.25 points); and the match-key links' own Dice scores
as the match distribution: they are the cleanest matches (1.2% of them
below 0.65, against 11% of the unkeyed matches), so they say little of the
tail (docs/benchmarks.md). Held out (FEBRL4, 5,000 x 5,000): precision and recall within 0.3 of
a point at the automatic threshold.

The sample (`engine.QUALITY_SAMPLE_ROWS` records) competes only within itself
for candidates: on a large side its non-matching links score a little higher
than the full run's, so precision errs low there.

What the clustering wrote (`estimate_written_quality`)
------------------------------------------------------

The fit describes a pair's own one-to-one solve, which picks its threshold;
what is written for the pair is what the multi-party clustering made of it
(`LinkResult.pairs`): a cluster joins records of ``a`` and ``b`` through a
third party whether or not they scored >= the threshold together, and a
stronger link through a third party can take a record from its own partner.
So after clustering the engine re-estimates each pair on the same sample
from the pairs actually written for it: a match-key link of the pair counts
as true, any other written pair as the fitted posterior at its own a-b Dice
score (0 below the floor) or, if higher, as true through a third party's
record of its cluster: the chance that both links through it are true (1
for a match-key link), as prior odds, times the likelihood ratio of the
pair's own score (`_through`). Recall divides by the same expected true
partners, so a partner the clustering separated counts as missed. With two
parties this is the pair's estimate, on the full run's links instead of the
sample's own solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage.beta import MIN_SHAPE, MIN_WEIGHT, beta_logpdf, weighted_beta
from headcount.linkage.dice import Candidates
from headcount.linkage.mixture import DEFAULT_FLOOR, ScoreMixture, fit_mixture, prepare_scores
from headcount.linkage.quality import QualityEstimate, runner_up_scores
from headcount.linkage.solve import match_one_to_one

__all__ = [
    "AUTO_MARGIN",
    "MIN_ANCHORS",
    "MIN_POOLED_MATCHES",
    "OutputFit",
    "estimate_from_fit",
    "estimate_output_quality",
    "estimate_written_quality",
    "fit_output",
    "link_posterior",
    "pooled_match_shape",
]

# An automatic threshold is never within this of the floor: the fit's
# non-match component is cut at the floor, and is least sure just above it.
AUTO_MARGIN = 0.05
_GRID_STEPS = 1000  # automatic thresholds are multiples of 1 / _GRID_STEPS
# Below this many anchors from records whose partner is known, the match
# component is borrowed from the run's other pairs (`pooled_match_shape`),
# or, with none to borrow from, runner-ups join the anchors.
MIN_ANCHORS = 50
# A pooled match component needs at least this many expected CLK matches
# (the posteriors' sum over the lending pairs' inexact links).
MIN_POOLED_MATCHES = 20.0
# Grid for the non-match distribution in `_lost_matches`, and the least
# chance of beating the best non-match it believes.
_GRID = 2000
_MIN_BEAT = 0.05


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
    if not floor <= threshold <= 1.0:  # checked before the work of a fit
        raise ValueError("threshold must be in [floor, 1]")
    return estimate_from_fit(
        fit_output(candidates, keyed, floor),
        threshold=threshold,
        auto_threshold=auto_threshold,
        lowest_threshold=lowest_threshold,
    )


def estimate_from_fit(
    fit: OutputFit,
    *,
    threshold: float,
    auto_threshold: bool = False,
    lowest_threshold: float | None = None,
) -> QualityEstimate:
    """`estimate_output_quality` from its fit (`fit_output`); same arguments and errors."""
    floor = fit.floor
    if not floor <= threshold <= 1.0:
        raise ValueError("threshold must be in [floor, 1]")
    lowest = floor + AUTO_MARGIN if lowest_threshold is None else lowest_threshold
    if not floor <= lowest <= 1.0:
        raise ValueError("lowest_threshold must be in [floor, 1]")
    return _output_estimate(fit, threshold, lowest if auto_threshold else None)


@dataclass(frozen=True, slots=True, eq=False)
class OutputFit:
    """The fit `estimate_output_quality` sums over (counts are per sample).

    Attributes:
        floor: the floor the candidates were cut at, in (0, 1).
        keyed: sampled records a match-key links, each taken as a true link.
        records: sampled records, > 0.
        scores: CLK link score of each other record that has one, descending.
        gamma: posterior that each of those links is a true match.
        lost: expected true matches that are no record's link, >= 0.
        model: the fitted mixture; None when every CLK link scored 1 (or
            there was none), and every one is then taken as true.
        known: records whose partner is known (a match-key link, or a link
            at exactly 1) that gave a non-match anchor (`_anchors`), >= 0.
        basis: what the fit rests on, one of `quality.ESTIMATE_BASES`:
            ``"own"`` (``known >= MIN_ANCHORS``, or no model needed),
            ``"pooled"`` (fewer: the match component's shape came from the
            run's other pairs, `pooled_match_shape`) or ``"unanchored"``
            (fewer, and none to borrow from: runner-ups stood in for the
            anchors, and the match component may be fitted to chance pairs).
    """

    floor: float
    keyed: int
    records: int
    scores: np.ndarray
    gamma: np.ndarray
    lost: float
    model: ScoreMixture | None
    known: int = 0
    basis: str = "own"

    @property
    def matches(self) -> float:
        """Expected sampled records with a true partner on the other side."""
        return self.keyed + float(self.gamma.sum()) + self.lost


def fit_output(
    candidates: Candidates,
    keyed: np.ndarray,
    floor: float,
    *,
    match_shape: tuple[float, float] | None = None,
) -> OutputFit:
    """Fit the model of what a run writes for a sample (`estimate_output_quality`).

    With ``match_shape`` (from `pooled_match_shape`) the matches' beta is
    held at it, and only the non-match anchors of records whose partner is
    known shape the non-match component (no runner-ups): the fit's
    ``basis`` is then ``"pooled"``. For a pair with fewer than `MIN_ANCHORS`
    such records, whose own fit is ``"unanchored"``.

    Raises:
        ValueError: ``keyed`` is not a non-empty bool array, a candidate names
            a sampled record outside it, the floor is outside (0, 1), or
            ``match_shape`` is out of range (`mixture.fit_mixture`).
    """
    prepare_scores(np.array([floor]), floor)  # checks the floor
    flags = np.asarray(keyed)
    if flags.ndim != 1 or flags.dtype != np.bool_ or len(flags) == 0:
        raise ValueError("keyed must be a non-empty bool array, one entry per sampled record")
    if len(candidates) and int(candidates.left.max()) >= len(flags):
        raise ValueError("a candidate names a sampled record outside keyed")
    return _fit(candidates, flags, floor, match_shape)


def pooled_match_shape(fits: Sequence[OutputFit]) -> tuple[float, float] | None:
    """The matches' beta shape of a run, from its pairs with an ``"own"`` fit.

    What a true match scores is a property of the encoding and of the
    errors in the records, which the pairs of one run largely share; what a
    chance pair scores depends on each pair's sizes and people. So a pair
    with too few records whose partner is known to show its non-matches
    (most of its shared people linked by match-keys: the CLK links it is
    fitted to are then nearly all chance pairs, and an own match component
    settles on their upper tail, 85-91 points of recall low on the
    federation benchmark) borrows the match shape and fits only the shares
    and its non-match component (`fit_output` with ``match_shape``).

    Returns the weighted maximum-likelihood beta of the lending fits'
    inexact links, each weighted by its posterior, or None when they hold
    fewer than `MIN_POOLED_MATCHES` expected matches.
    """
    xs: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for fit in fits:
        if fit.basis != "own" or fit.model is None:
            continue
        x, exact = prepare_scores(fit.scores, fit.floor)
        xs.append(x[~exact])
        weights.append(fit.gamma[~exact])
    if not xs:
        return None
    x = np.concatenate(xs)
    w = np.concatenate(weights)
    if float(w.sum()) < MIN_POOLED_MATCHES:
        return None
    return weighted_beta(w, np.log(x), np.log1p(-x), (5.0, 1.0), a_min=1.0, b_min=MIN_SHAPE)


def _fit(
    candidates: Candidates,
    keyed: np.ndarray,
    floor: float,
    match_shape: tuple[float, float] | None,
) -> OutputFit:
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
        return OutputFit(floor, k, rows, scores, gamma, 0.0, None, k)
    # Records whose partner is known: a match-key holds them, or their link
    # scores exactly 1 (identical encodings; never a non-match).
    sure = keyed.copy()
    sure[links.left[links.score >= 1.0]] = True
    anchors = _anchors(candidates, sure, links)
    known = len(anchors)
    basis = "own"
    if match_shape is not None:
        basis = "pooled"
    elif known < MIN_ANCHORS:
        # Too few such records to show what a non-match looks like, and no
        # match component to borrow: add the runner-ups of the others
        # (second-best chance scores, a little low for a non-matching link).
        basis = "unanchored"
        runner_ups, _ = runner_up_scores(free, links)
        anchors = np.concatenate((anchors, runner_ups[runner_ups < 1.0]))
    model, gamma = fit_mixture(scores, floor, nonmatch_scores=anchors, match_shape=match_shape)
    lost = _lost_matches(model, scores, gamma)
    return OutputFit(floor, k, rows, scores, gamma, lost, model, known, basis)


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
    x, _ = prepare_scores(scores[seen], model.floor)
    grid = (np.arange(_GRID) + 0.5) / _GRID
    density = np.exp(beta_logpdf(np.log(grid), np.log1p(-grid), *model.nonmatch_shape))
    cdf = np.cumsum(density) / density.sum()
    beaten = np.maximum(np.interp(x, grid, cdf), _MIN_BEAT)
    return float(np.sum(gamma[seen] * (1.0 - beaten) / beaten))


def _output_estimate(parts: OutputFit, threshold: float, lowest: float | None) -> QualityEstimate:
    """The estimate at ``threshold``, or at the best cut >= ``lowest`` when given."""
    s, g = parts.scores, parts.gamma
    k = float(parts.keyed)
    matches = parts.matches
    kept = k + np.cumsum(g)
    precision = kept / (k + np.arange(1, len(s) + 1, dtype=np.float64))
    recall = kept / max(matches, MIN_WEIGHT)
    f1 = 2.0 * precision * recall / np.maximum(precision + recall, MIN_WEIGHT)
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
        p, r = 1.0, (k / matches if matches > MIN_WEIGHT else 1.0)
    else:
        p, r = float(precision[at]), float(recall[at])
    return _quality(chosen, p, r, matches, parts)


def link_posterior(fit: OutputFit, scores: np.ndarray) -> np.ndarray:
    """P(true match) of CLK links of the fit's pair at Dice ``scores``, in [0, 1].

    The fitted mixture's posterior (`ScoreMixture.posterior`); 1 at exactly
    1; 0 below the floor, where the fit says nothing and a non-match is all
    but sure; with no model (every CLK link the fit saw scored 1), 0 below 1.
    """
    dice = np.asarray(scores, dtype=np.float64)
    if fit.model is None:
        out: np.ndarray = (dice >= 1.0).astype(np.float64)
        return out
    # A score of exactly 1 is never a non-match (`mixture`), even where the
    # fit saw no match score 1 and its posterior there is 0 / 0.
    gamma = (dice >= 1.0).astype(np.float64)
    fitted = (dice >= fit.floor) & (dice < 1.0)
    if bool(fitted.any()):
        gamma[fitted] = fit.model.posterior(dice[fitted])
    return gamma


def estimate_written_quality(
    fit: OutputFit,
    threshold: float,
    *,
    sure: np.ndarray,
    scores: np.ndarray,
    via: np.ndarray | None = None,
) -> QualityEstimate:
    """The estimate of the pairs a run finally wrote for the sampled records.

    With three or more parties the clustering, not the pair's own one-to-one
    solve, decides what is written for a pair (a, b): a cluster joins a
    record of ``a`` to one of ``b`` through a third party even where the two
    never scored >= the threshold, and a stronger link through a third party
    can take a record away from its own partner. So each sampled record's
    written pair is judged on its own: a match-key link of the pair is true,
    any other is true with the fitted mixture's posterior at the pair's own
    Dice score (`link_posterior`) or, if higher, with the chance that it is
    true through a third party: the chance ``via`` that both its links
    through that party are true, weighed by what the pair's own score says
    (`_through`). Precision is their sum over the written pairs; recall
    is that sum over the fit's expected true partners (`OutputFit.matches`),
    so a true partner the clustering separated counts as missed.

    Args:
        fit: the pair's `fit_output`, for the same sample.
        threshold: the threshold the pair's links were cut at, in [floor, 1]
            (reported with the estimate).
        sure: bool per sampled record: its written pair is a match-key link.
        scores: float per sampled record: the Dice score of its written
            pair, NaN where nothing was written for it (ignored where ``sure``).
        via: optional float per sampled record in [0, 1]: the chance that
            its written pair is true through a third party's record in the
            same cluster (ignored where nothing was written).

    Raises:
        ValueError: ``sure``, ``scores`` or ``via`` is not one entry per
            sampled record, a score or ``via`` is outside [0, 1], or the
            threshold is out of range.
    """
    flags = np.asarray(sure)
    dice = np.asarray(scores, dtype=np.float64)
    if flags.dtype != np.bool_ or flags.shape != (fit.records,) or dice.shape != flags.shape:
        raise ValueError("sure and scores must hold one entry per sampled record")
    written = flags | ~np.isnan(dice)
    if bool(np.any((dice[~flags] < 0.0) | (dice[~flags] > 1.0))):
        raise ValueError("scores must be in [0, 1] or NaN")
    if not fit.floor <= threshold <= 1.0:
        raise ValueError("threshold must be in [floor, 1]")
    clk = written & ~flags
    gamma = link_posterior(fit, dice[clk])
    if via is not None:
        through = np.asarray(via, dtype=np.float64)
        if through.shape != flags.shape:
            raise ValueError("via must hold one entry per sampled record")
        if bool(np.any(~((through[clk] >= 0.0) & (through[clk] <= 1.0)))):
            raise ValueError("via must be in [0, 1]")
        gamma = np.maximum(gamma, _through(fit, dice[clk], through[clk]))
    true_links = float(flags.sum()) + float(gamma.sum())
    n = int(written.sum())
    p = true_links / n if n else 1.0
    matches = fit.matches
    r = true_links / matches if matches > MIN_WEIGHT else 1.0
    return _quality(threshold, p, r, matches, fit)


def _through(fit: OutputFit, dice: np.ndarray, via: np.ndarray) -> np.ndarray:
    """P(true) of written pairs joined through a third party.

    The chance ``via`` that both links through the third party are true,
    as prior odds, times the likelihood ratio of the pair's own Dice score
    under the pair's fit (taken at the floor below it): a pair of two
    match-key links is true, but one joined through a link at the third
    pair's threshold, with a score of its own that no match has, is not
    (a child's record joined to a stranger's through its father's, on the
    federation benchmark). With no model, ``via`` as it is (1 at a score of
    exactly 1).
    """
    out = np.zeros(len(dice))
    out[via >= 1.0] = 1.0
    rest = (via > 0.0) & (via < 1.0)
    if not bool(rest.any()):
        return out
    if fit.model is None:
        out[rest] = np.where(dice[rest] >= 1.0, 1.0, via[rest])
        return out
    log_ratio = fit.model.log_likelihood_ratio(np.clip(dice[rest], fit.floor, 1.0))
    log_odds = np.log(via[rest]) - np.log1p(-via[rest]) + log_ratio
    out[rest] = 0.5 * (1.0 + np.tanh(0.5 * log_odds))  # the logistic, finite at +-inf
    return out


def _quality(
    threshold: float, precision: float, recall: float, matches: float, fit: OutputFit
) -> QualityEstimate:
    """A QualityEstimate from its parts, precision and recall capped at 1."""
    p, r = min(1.0, precision), min(1.0, recall)
    model = fit.model
    return QualityEstimate(
        threshold=threshold,
        est_precision=p,
        est_recall=r,
        est_f1=2.0 * p * r / (p + r) if p + r > 0.0 else 0.0,
        match_share=min(1.0, matches / fit.records),
        converged=True if model is None else model.converged,
        iterations=0 if model is None else model.iterations,
        basis=fit.basis,
    )
