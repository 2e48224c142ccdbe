"""Score histograms per department pair, computed by the coordinator at epoch time.

The quality estimate (`headcount.linkage.quality`) is fitted to the Dice
scores of the one-to-one links made, down to the candidate floor, from a fixed
sample of the smaller department's records. A data steward judging a
threshold wants to see that distribution: the pile of matches near 1, the
non-matching "best guesses" near the floor, and where the threshold cuts
between them. This module recomputes exactly that population (same sample
rule, same floor, same greedy solver) and bins it.

The counts are the coordinator's own knowledge (it sees every score); they
are stored with the epoch and are *not* protected here. Anything published
from them goes through the small-number rule first (`headcount.report.summary`).
Only numpy and the linkage kernel are imported, so the coordinator pays nothing
for the report's plotting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from headcount.errors import InvalidRequest
from headcount.linkage.dice import best_pairs
from headcount.linkage.engine import QUALITY_SAMPLE_ROWS, QUALITY_TOP_CANDIDATES
from headcount.linkage.solve import match_one_to_one

DEFAULT_BINS = 20  # 0.025-wide bins between the default floor (0.5) and 1

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ScoreHistogram:
    """Binned Dice scores of the links the quality estimate of one pair was fitted to.

    Attributes:
        left, right: the department pair, ``left < right``.
        floor: lowest score binned, in (0, 1).
        threshold: the pair's link threshold in the epoch, in [floor, 1].
        edges: ``len(counts) + 1`` increasing bin edges from ``floor`` to 1; the
            last bin includes 1.0 (identical encodings).
        counts: links per bin, each >= 0 (unprotected: coordinator-side only).
        sampled_party: the department whose records were sampled (the smaller).
        sampled_records: records of ``sampled_party`` compared, >= 0.

    Raises:
        InvalidRequest: edges and counts disagree, or a value is out of range.
    """

    left: str
    right: str
    floor: float
    threshold: float
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    sampled_party: str
    sampled_records: int

    def __post_init__(self) -> None:
        if not self.left < self.right:
            raise InvalidRequest("a score histogram's pair must be in name order")
        if not 0.0 < self.floor < 1.0 or not self.floor <= self.threshold <= 1.0:
            raise InvalidRequest("need 0 < floor <= threshold <= 1")
        if len(self.edges) != len(self.counts) + 1 or not self.counts:
            raise InvalidRequest("a histogram needs one more edge than bins, and a bin")
        if any(b <= a for a, b in itertools.pairwise(self.edges)):
            raise InvalidRequest("bin edges must increase")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.counts):
            raise InvalidRequest("bin counts must be ints >= 0")
        if self.sampled_party not in (self.left, self.right) or self.sampled_records < 0:
            raise InvalidRequest("the sampled party must be one of the pair")

    @property
    def links(self) -> int:
        """Links binned (over the sample)."""
        return sum(self.counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "left": self.left,
            "right": self.right,
            "floor": self.floor,
            "threshold": self.threshold,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "sampled_party": self.sampled_party,
            "sampled_records": self.sampled_records,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ScoreHistogram:
        """Inverse of `to_json`; InvalidRequest on a malformed document."""
        try:
            return cls(
                str(doc["left"]),
                str(doc["right"]),
                float(doc["floor"]),
                float(doc["threshold"]),
                tuple(float(e) for e in doc["edges"]),
                tuple(int(c) for c in doc["counts"]),
                str(doc["sampled_party"]),
                int(doc["sampled_records"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed score histogram: {exc}") from None


def sample_rows(n: int, limit: int = QUALITY_SAMPLE_ROWS) -> np.ndarray:
    """The same fixed, spread-out sample of row indices the linkage engine fits on."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def score_histograms(
    clks: Mapping[str, np.ndarray],
    thresholds: Mapping[Pair, float],
    floor: float,
    *,
    bins: int = DEFAULT_BINS,
) -> dict[Pair, ScoreHistogram]:
    """Histogram, for each pair in ``thresholds``, of the fitted link scores.

    ``clks`` maps party to a uint8 (records, filter_bytes) array, as given to
    `headcount.linkage.engine.link_parties`; ``thresholds`` is its
    ``LinkResult.thresholds`` (pairs in name order); ``floor`` the schema's
    candidate floor. Scores of the one-to-one links from sampled records of
    the smaller side against all of the other side, down to
    ``min(floor, threshold)``, are put in ``bins`` equal bins up to 1.

    Raises:
        InvalidRequest: ``bins`` < 1, ``floor`` outside (0, 1), or an unknown party.
        ValueError: CLK arrays the Dice kernel refuses.
    """
    if bins < 1:
        raise InvalidRequest("bins must be >= 1")
    if not 0.0 < floor < 1.0:
        raise InvalidRequest("floor must be in (0, 1)")
    out: dict[Pair, ScoreHistogram] = {}
    for (a, b), threshold in sorted(thresholds.items()):
        if a not in clks or b not in clks:
            raise InvalidRequest(f"no encodings for pair {a} x {b}")
        low = min(floor, threshold)
        edges = np.linspace(low, 1.0, bins + 1)
        # Sample the smaller side, as the engine does: a small department is seen whole.
        small, large = (a, b) if len(clks[a]) <= len(clks[b]) else (b, a)
        rows = sample_rows(len(clks[small]))
        counts = np.zeros(bins, dtype=np.int64)
        if len(rows) and len(clks[large]):
            # Each sampled record's best candidates only, as the engine keeps
            # for its estimate (`engine.QUALITY_TOP_CANDIDATES`): the greedy
            # one-to-one links are the same as from every candidate unless
            # that many of a record's best partners went to other sampled
            # records first. Every candidate >= a floor of 0.5 is some 3.7%
            # of all pairs: 18.5 million per pair at 5,000 x 100,000 records,
            # which took minutes and gigabytes to hold, sort and match.
            cands = best_pairs(clks[small][rows], clks[large], low, QUALITY_TOP_CANDIDATES)
            links = match_one_to_one(cands)
            counts, _ = np.histogram(links.score, bins=edges)
        out[(a, b)] = ScoreHistogram(
            a,
            b,
            float(low),
            float(threshold),
            tuple(float(e) for e in edges),
            tuple(int(c) for c in counts),
            small,
            len(rows),
        )
    return out
