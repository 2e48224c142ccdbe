"""Match quality without ground truth: a two-component mixture fitted to Dice scores.

In production nobody knows which links are right, but the scores carry the
answer in aggregate: true matches pile up near 1, non-matches near the floor,
and a model of the two piles says how many non-matches sit above a threshold
(precision) and how many matches fall below it (recall).

Two estimates build on the mixture (`headcount.linkage.mixture`): the quality
of what a run writes, match-key links included
(`headcount.linkage.output_quality`, the one the engine reports), and the
older estimate of the CLK links alone, here.

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
  low; `estimate_output_quality` prefers its own anchors
  (`headcount.linkage.output_quality`).

Blocking: LSH blocking tuned for a threshold of 0.8 rarely puts pairs scoring
0.5-0.7 in one block, so candidates from `blocking.candidate_pairs_blocked`
under-represent exactly the non-matching links these fits need. Fit on
unblocked candidates (``dice.score_pairs`` or ``dice.best_pairs``), if need
be for a random sample of the smaller side's records against all of the
other side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcount.linkage.beta import MIN_WEIGHT
from headcount.linkage.dice import Candidates
from headcount.linkage.mixture import DEFAULT_FLOOR, check_agreement, fit_mixture
from headcount.linkage.solve import match_one_to_one

__all__ = [
    "ESTIMATE_BASES",
    "QualityEstimate",
    "basis_note",
    "estimate_link_quality",
    "estimate_quality",
    "runner_up_scores",
]


# What an estimate's fit rests on (`output_quality.OutputFit.basis`), and
# what a table says of it (`basis_note`).
ESTIMATE_BASES = ("own", "pooled", "unanchored")
_BASIS_NOTES = {
    "own": "",
    "pooled": "match scores pooled from the other pairs",
    "unanchored": "few known partners: may be far off",
}


def basis_note(basis: str | None) -> str:
    """A short note on an estimate's basis for tables: empty for ``"own"`` or None."""
    return _BASIS_NOTES.get(basis or "own", basis or "")


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
        basis: what the fit rests on, one of `ESTIMATE_BASES`: ``"own"``,
            the pair's own links; ``"pooled"``, the pair's links with the
            match component's shape borrowed from the run's other pairs
            (too few of its records have a known partner to fit it);
            ``"unanchored"``, too few known partners and nothing to borrow
            from, so the estimate may be far off (see
            `headcount.linkage.output_quality`).

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
    basis: str = "own"

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
        if self.basis not in ESTIMATE_BASES:
            raise ValueError(f"basis must be one of {ESTIMATE_BASES}")


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
    recall = kept_matches / max(float(g.sum()), MIN_WEIGHT)
    f1 = 2.0 * precision * recall / np.maximum(precision + recall, MIN_WEIGHT)
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
            on any match-key level (``keylinks.agreement_levels(...) >= 0``).
        threshold: as for `estimate_quality`.

    Raises:
        ValueError: as `estimate_quality`, or ``agreement`` is not one bool per
            candidate, or there are no candidates.
    """
    if len(candidates) == 0:
        raise ValueError("no candidate pairs to estimate from")
    agrees = check_agreement(agreement, len(candidates), "agreement")
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


def _pair_ids(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    # Row indices are far below 2**31 (CLK matrices of that many rows would not
    # fit in memory), so one int64 holds both.
    ids: np.ndarray = left.astype(np.int64) << 32 | right.astype(np.int64)
    return ids
