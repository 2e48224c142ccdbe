"""Tests for headcount.linkage.quality, .mixture and .output_quality: quality without truth.

Three kinds of check: the EM recovers a mixture drawn from known parameters;
on a synthetic population its estimates land near the precision and recall
that the ground truth gives, and the threshold it picks is nearly the best one;
and the estimate of what a run writes (match-key links plus CLK links,
`estimate_output_quality`) is within a point of the truth of a simulated run
whose answer is known.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from synthetic_pairs import load_education_health

from headcount.linkage.clk import decoy_clks, encode_clks, fill_rates
from headcount.linkage.clk_schema import with_present_fields
from headcount.linkage.dedup import dedup_records
from headcount.linkage.dice import Candidates, score_pairs
from headcount.linkage.keylinks import agreement_levels
from headcount.linkage.matchkeys import (
    EXTRA_MATCH_KEYS,
    derive_match_keys,
    derive_support_keys,
    match_keys,
    present_fields,
)
from headcount.linkage.mixture import DEFAULT_FLOOR, ScoreMixture, fit_mixture
from headcount.linkage.normalise import Identity
from headcount.linkage.output_quality import (
    AUTO_MARGIN,
    MIN_ANCHORS,
    estimate_from_fit,
    estimate_output_quality,
    estimate_written_quality,
    fit_output,
    pooled_match_shape,
)
from headcount.linkage.quality import (
    QualityEstimate,
    estimate_link_quality,
    estimate_quality,
    runner_up_scores,
)
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, LinkageSchema
from headcount.linkage.solve import match_one_to_one
from headcount.linkfiles import read_options
from headcount.synth import generate_population
from headcount.tools.intl_profile import dedup_file
from party_node.data import read_identity_file

SECRET = bytes(range(32))
FLOOR = DEFAULT_FLOOR


# --- value objects ------------------------------------------------------------------


def test_quality_estimate_checks_its_ranges() -> None:
    ok = QualityEstimate(0.8, 0.99, 0.98, 0.985, 0.9, True, 12)
    assert ok.est_f1 == 0.985
    for bad in (
        {"threshold": 1.2},
        {"est_precision": -0.1},
        {"est_recall": float("nan")},
        {"match_share": True},
        {"iterations": -1},
        {"converged": 1},
        {"basis": "guessed"},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(ok, **bad)  # type: ignore[arg-type]


def test_score_mixture_checks_its_parameters() -> None:
    ok = ScoreMixture(0.5, 0.5, 0.5, (2.0, 1.0), (1.0, 3.0))
    for bad in (
        {"floor": 1.0},
        {"match_share": 0.0},
        {"exact_share": 1.5},
        {"match_shape": (0.0, 1.0)},
        {"agree_match": 0.5},
        {"agree_match": 1.0, "agree_nonmatch": 0.5},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(ok, **bad)  # type: ignore[arg-type]


# --- recovering a known mixture -----------------------------------------------------


def _draw(
    rng: np.random.Generator, n: int, share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Link scores from a known model, their labels, and runner-up non-match scores."""
    is_match = rng.random(n) < share
    exact = rng.random(n) < 0.6
    x = np.where(is_match, rng.beta(9.0, 2.0, n), rng.beta(3.0, 8.0, n))
    scores = np.where(is_match & exact, 1.0, FLOOR + (1.0 - FLOOR) * x)
    runner_ups = FLOOR + (1.0 - FLOOR) * rng.beta(3.0, 8.0, n // 2)
    return scores, is_match, runner_ups


def _truth_at(scores: np.ndarray, is_match: np.ndarray, threshold: float) -> tuple[float, float]:
    kept = scores >= threshold
    hits = int((kept & is_match).sum())
    return hits / max(int(kept.sum()), 1), hits / int(is_match.sum())


@pytest.mark.parametrize("share", [0.2, 0.8])
def test_em_recovers_a_known_mixture(share: float) -> None:
    scores, is_match, runner_ups = _draw(np.random.default_rng(1), 4000, share)
    model, posterior = fit_mixture(scores, FLOOR, nonmatch_scores=runner_ups)
    assert model.converged
    assert abs(model.match_share - share) < 0.02
    assert abs(model.exact_share - 0.6) < 0.03
    assert np.all(posterior[scores == 1.0] == 1.0)
    for threshold in (0.7, 0.75, 0.8, 0.85):
        estimate = estimate_quality(scores, FLOOR, nonmatch_scores=runner_ups, threshold=threshold)
        precision, recall = _truth_at(scores, is_match, threshold)
        assert abs(estimate.est_precision - precision) < 0.02, threshold
        assert abs(estimate.est_recall - recall) < 0.02, threshold


def test_em_without_anchors_is_still_sane_on_a_known_mixture() -> None:
    scores, is_match, _ = _draw(np.random.default_rng(2), 4000, 0.5)
    estimate = estimate_quality(scores, FLOOR)
    precision, recall = _truth_at(scores, is_match, estimate.threshold)
    assert abs(estimate.est_precision - precision) < 0.03
    assert abs(estimate.est_recall - recall) < 0.03


def test_posterior_never_falls_as_the_score_rises() -> None:
    scores, _, runner_ups = _draw(np.random.default_rng(3), 2000, 0.5)
    # A few links just above the floor, where both densities are tiny.
    scores = np.concatenate((scores, np.full(5, FLOOR + 0.001)))
    model, posterior = fit_mixture(scores, FLOOR, nonmatch_scores=runner_ups)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(posterior[order]) >= -1e-12)
    grid = np.linspace(FLOOR, 1.0, 201)
    assert np.all(np.diff(model.posterior(grid)) >= -1e-12)
    assert model.posterior(np.array([FLOOR]))[0] < 0.01


def test_a_given_match_shape_is_held_and_the_rest_fitted() -> None:
    scores, _, runner_ups = _draw(np.random.default_rng(5), 2000, 0.3)
    model, posterior = fit_mixture(
        scores, FLOOR, nonmatch_scores=runner_ups, match_shape=(9.0, 2.0)
    )
    assert model.match_shape == (9.0, 2.0)
    assert abs(model.match_share - 0.3) < 0.02
    assert model.posterior(scores) == pytest.approx(posterior)


def test_likelihood_ratio_and_share_give_the_posterior() -> None:
    scores, _, runner_ups = _draw(np.random.default_rng(6), 2000, 0.4)
    model, _ = fit_mixture(scores, FLOOR, nonmatch_scores=runner_ups)
    grid = np.linspace(0.7, 0.99, 30)  # where the posterior is monotone already
    odds = np.exp(model.log_likelihood_ratio(grid)) * model.match_share / (1 - model.match_share)
    assert odds / (1 + odds) == pytest.approx(model.posterior(grid), rel=1e-9)
    assert model.log_likelihood_ratio(np.array([1.0]))[0] == np.inf


def test_chosen_threshold_maximises_estimated_f1() -> None:
    scores, _, runner_ups = _draw(np.random.default_rng(4), 2000, 0.6)
    chosen = estimate_quality(scores, FLOOR, nonmatch_scores=runner_ups)
    assert chosen.threshold in set(scores.tolist())
    for threshold in np.unique(scores)[::25]:
        other = estimate_quality(
            scores, FLOOR, nonmatch_scores=runner_ups, threshold=float(threshold)
        )
        assert other.est_f1 <= chosen.est_f1 + 1e-12


def test_a_threshold_above_every_score_keeps_nothing() -> None:
    scores = np.array([0.55, 0.6, 0.9, 0.95])
    estimate = estimate_quality(scores, FLOOR, threshold=0.99)
    assert (estimate.est_precision, estimate.est_recall, estimate.est_f1) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": np.array([])}, "non-empty"),
        ({"scores": np.array([0.4, 0.9])}, r"\[floor, 1\]"),
        ({"scores": np.array([1.0, 1.0])}, "exactly 1"),
        ({"scores": np.array([0.6, 0.9]), "floor": 1.0}, "floor"),
        ({"scores": np.array([0.6, 0.9]), "agreement": np.array([1, 0])}, "bool"),
        ({"scores": np.array([0.6, 0.9]), "agreement": np.array([True])}, "bool"),
        (
            {
                "scores": np.array([0.6, 0.9]),
                "agreement": np.array([True, False]),
                "nonmatch_scores": np.array([0.6]),
            },
            "nonmatch_agreement is required",
        ),
        (
            {"scores": np.array([0.6, 0.9]), "nonmatch_scores": np.array([1.0])},
            "cannot score exactly 1",
        ),
        ({"scores": np.array([0.6, 0.9]), "max_iterations": 0}, "max_iterations"),
        ({"scores": np.array([0.6, 0.9]), "match_shape": (0.5, 2.0)}, "match_shape"),
        ({"scores": np.array([0.6, 0.9]), "match_shape": (2.0,)}, "match_shape"),
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_mixture(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        estimate_quality(np.array([0.6, 0.9]), FLOOR, threshold=0.3)


def test_runner_ups_are_each_records_best_other_candidate() -> None:
    # Left 0 links to right 0 (0.95) and also scores 0.7 with right 1; left 1
    # links to right 1 (0.9) and scores 0.6 with right 0; left 2 has one
    # candidate, its link, so no runner-up. The left side has fewer records.
    candidates = Candidates(
        np.array([0, 1, 0, 1, 2]),
        np.array([0, 1, 1, 0, 2]),
        np.array([0.95, 0.9, 0.7, 0.6, 0.8]),
    )
    links = match_one_to_one(candidates)
    scores, positions = runner_up_scores(candidates, links)
    assert scores.tolist() == [0.7, 0.6]
    assert candidates.left[positions].tolist() == [0, 1]


# --- synthetic population -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Linked:
    left: list[Identity]
    right: list[Identity]
    candidates: Candidates
    truth: frozenset[tuple[int, int]]


@pytest.fixture(scope="module", params=[2, 4])
def linked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> _Linked:
    """Education x health candidates >= 0.5 from a 2,000-person population.

    The floor sits well below any threshold on purpose: the fit needs the
    non-matching links (0.5-0.75) whole, not just their upper tail.
    """
    out = tmp_path_factory.mktemp(f"quality{request.param}")
    generate_population(2000, request.param, out)
    left, right, truth = load_education_health(out)
    candidates = score_pairs(encode_clks(left, SECRET), encode_clks(right, SECRET), FLOOR)
    return _Linked(left, right, candidates, truth)


def _true_quality(
    links: Candidates, truth: frozenset[tuple[int, int]], threshold: float
) -> tuple[float, float, float]:
    keep = links.score >= threshold
    found = set(zip(links.left[keep].tolist(), links.right[keep].tolist(), strict=True))
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


def _check_against_truth(linked: _Linked, estimate: QualityEstimate) -> None:
    links = match_one_to_one(linked.candidates)
    precision, recall, f1 = _true_quality(links, linked.truth, estimate.threshold)
    assert estimate.converged
    assert abs(estimate.est_precision - precision) <= 0.03, (estimate, precision)
    assert abs(estimate.est_recall - recall) <= 0.03, (estimate, recall)
    best = max(_true_quality(links, linked.truth, t)[2] for t in np.unique(links.score))
    assert f1 >= best - 0.01, (estimate.threshold, f1, best)


def test_estimate_matches_the_truth_on_synthetic_data(linked: _Linked) -> None:
    _check_against_truth(linked, estimate_link_quality(linked.candidates, FLOOR))


def test_estimate_with_match_key_agreement(linked: _Linked) -> None:
    left_keys = match_keys(linked.left, SECRET)
    right_keys = match_keys(linked.right, SECRET)
    c = linked.candidates
    agrees = agreement_levels(left_keys, right_keys, c.left, c.right) >= 0
    _check_against_truth(linked, estimate_link_quality(c, FLOOR, agreement=agrees))


def test_estimate_at_the_configured_threshold(linked: _Linked) -> None:
    estimate = estimate_link_quality(linked.candidates, FLOOR, threshold=0.8)
    assert estimate.threshold == 0.8
    links = match_one_to_one(linked.candidates)
    precision, recall, _ = _true_quality(links, linked.truth, 0.8)
    assert abs(estimate.est_precision - precision) <= 0.03
    assert abs(estimate.est_recall - recall) <= 0.03


def test_near_floor_decoy_links_do_not_move_the_threshold(linked: _Linked) -> None:
    # Decoys link to nothing real but can take a few links just above the
    # floor; the monotone posterior keeps them from being read as matches.
    rng = np.random.default_rng(0)
    left = encode_clks(linked.left, SECRET)
    right = encode_clks(linked.right, SECRET)
    left = np.vstack((left, decoy_clks(len(left) // 5, 1024, fill_rates(left), rng)))
    right = np.vstack((right, decoy_clks(len(right) // 5, 1024, fill_rates(right), rng)))
    plain = estimate_link_quality(linked.candidates, FLOOR)
    with_decoys = estimate_link_quality(score_pairs(left, right, FLOOR), FLOOR)
    assert abs(with_decoys.threshold - plain.threshold) < 0.03
    assert abs(with_decoys.est_precision - plain.est_precision) < 0.01


def test_agreement_must_align_with_the_candidates(linked: _Linked) -> None:
    with pytest.raises(ValueError, match="bool"):
        estimate_link_quality(linked.candidates, FLOOR, agreement=np.array([True]))
    with pytest.raises(ValueError, match="no candidate"):
        estimate_link_quality(Candidates.empty(), FLOOR)


# --- what a run writes: match-key links plus CLK links --------------------------------


@dataclasses.dataclass(frozen=True)
class _Run:
    """A simulated sample: each record's candidates, and the answer."""

    candidates: Candidates
    keyed: np.ndarray  # bool per record: a match-key link holds it (a true link)
    partnered: np.ndarray  # bool per record without one: it has a true partner
    partner: np.ndarray  # that partner's candidate id, -1 when none or below the floor


def _simulate(
    seed: int, n: int = 4000, keyed_share: float = 0.7, partner_share: float = 0.5, high: float = 0
) -> _Run:
    """Records as `engine._fit_pair` sees them, drawn from a known process.

    Seven in ten records are keyed (their partner is taken, so only chance
    candidates remain); of the rest, half have a partner somewhere on the
    other side, scoring ``floor + (1 - floor) * Beta(5, 2.5)`` (down into the
    chance region). Every record has a best chance candidate (``floor + (1 -
    floor) * Beta(4, 20)``, about 0.58; ``high`` more for a quarter of the
    records, as for records with many bits set) and up to four more below it,
    ``0.01 + high / 2`` apart on average. Each candidate is a distinct
    record of the other side.
    """
    rng = np.random.default_rng(seed)
    keyed = rng.random(n) < keyed_share
    partnered = ~keyed & (rng.random(n) < partner_share)
    partner_score = FLOOR + (1.0 - FLOOR) * rng.beta(5.0, 2.5, n)
    best = FLOOR + (1.0 - FLOOR) * rng.beta(4.0, 20.0, n) + high * (rng.random(n) < 0.25)
    gaps = rng.exponential(0.01 + high / 2, (n, 4))
    chance = best[:, None] - np.cumsum(np.c_[np.zeros(n), gaps], axis=1)
    rows, ranks = np.nonzero(chance >= FLOOR)
    left, score = rows, chance[rows, ranks]
    with_partner = np.flatnonzero(partnered & (partner_score >= FLOOR))
    left = np.concatenate((left, with_partner))
    score = np.concatenate((score, partner_score[with_partner]))
    right = np.arange(len(left))
    partner = np.full(n, -1)
    partner[with_partner] = right[len(rows) :]
    return _Run(Candidates(left, right, score), keyed, partnered, partner)


def _run_truth(run: _Run, threshold: float) -> tuple[float, float]:
    """Precision and recall of the keyed links plus each other record's best
    candidate at or above ``threshold`` (no two records share a candidate)."""
    c = run.candidates
    order = np.lexsort((-c.score, c.left))
    left, right, score = c.left[order], c.right[order], c.score[order]
    first = np.r_[True, left[1:] != left[:-1]]
    left, right, score = left[first], right[first], score[first]
    written = ~run.keyed[left] & (score >= threshold)
    right_ones = int(np.count_nonzero(run.partner[left[written]] == right[written]))
    keyed = int(run.keyed.sum())
    precision = (keyed + right_ones) / (keyed + int(written.sum()))
    recall = (keyed + right_ones) / (keyed + int(run.partnered.sum()))
    return precision, recall


@pytest.mark.parametrize("seed", [0, 1])
def test_output_estimate_matches_a_known_run(seed: int) -> None:
    run = _simulate(seed)
    for threshold in (0.6, 0.65, 0.7, 0.8):
        estimate = estimate_output_quality(run.candidates, run.keyed, FLOOR, threshold=threshold)
        precision, recall = _run_truth(run, threshold)
        assert estimate.threshold == threshold
        assert abs(estimate.est_precision - precision) <= 0.01, (threshold, estimate, precision)
        assert abs(estimate.est_recall - recall) <= 0.01, (threshold, estimate, recall)


def test_output_estimate_counts_keyed_links_and_partners_never_linked() -> None:
    # Keyed links are true links in both precision and recall: ignoring them
    # (the CLK links alone) gives a precision some ten points lower at 0.6.
    run = _simulate(2)
    clk_only = estimate_link_quality(
        Candidates(
            run.candidates.left[~run.keyed[run.candidates.left]],
            run.candidates.right[~run.keyed[run.candidates.left]],
            run.candidates.score[~run.keyed[run.candidates.left]],
        ),
        FLOOR,
        threshold=0.6,
    )
    estimate = estimate_output_quality(run.candidates, run.keyed, FLOOR, threshold=0.6)
    precision, recall = _run_truth(run, 0.6)
    assert clk_only.est_precision < precision - 0.05
    assert abs(estimate.est_precision - precision) <= 0.01
    # Recall counts every record with a partner, linked or not.
    assert abs(estimate.est_recall - recall) <= 0.01
    assert estimate.match_share == pytest.approx(
        (run.keyed.sum() + run.partnered.sum()) / len(run.keyed), abs=0.01
    )


def test_auto_threshold_maximises_the_estimated_f1() -> None:
    run = _simulate(3)
    chosen = estimate_output_quality(
        run.candidates, run.keyed, FLOOR, threshold=0.9, auto_threshold=True
    )
    assert chosen.threshold >= FLOOR + AUTO_MARGIN
    assert chosen.threshold == round(chosen.threshold, 3)  # a round number
    for threshold in np.arange(55, 95) / 100:
        other = estimate_output_quality(
            run.candidates, run.keyed, FLOOR, threshold=float(threshold)
        )
        assert other.est_f1 <= chosen.est_f1 + 1e-12
    # And it is close to the best threshold by the truth.
    precision, recall = _run_truth(run, chosen.threshold)
    f1 = 2 * precision * recall / (precision + recall)
    best = max(
        2 * p * r / (p + r) for p, r in (_run_truth(run, t) for t in np.arange(0.55, 0.95, 0.005))
    )
    assert f1 >= best - 0.002


def test_auto_threshold_keeps_the_given_one_without_links_to_choose_from() -> None:
    # Every record keyed: no CLK link, nothing to choose from.
    candidates = Candidates(np.array([0, 1]), np.array([0, 1]), np.array([0.58, 0.6]))
    keyed = np.array([True, True, False])
    estimate = estimate_output_quality(candidates, keyed, FLOOR, threshold=0.7, auto_threshold=True)
    assert estimate.threshold == 0.7
    assert (estimate.est_precision, estimate.est_recall) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keyed": np.array([1, 0])}, "keyed"),
        ({"keyed": np.array([], dtype=bool)}, "keyed"),
        ({"keyed": np.array([True])}, "outside keyed"),
        ({"threshold": 0.4}, "threshold"),
        ({"lowest_threshold": 1.2}, "lowest_threshold"),
        ({"floor": 1.0}, "floor"),
    ],
)
def test_output_estimate_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "candidates": Candidates(np.array([0, 1]), np.array([3, 4]), np.array([0.6, 0.9])),
        "keyed": np.array([False, True]),
        "floor": FLOOR,
        "threshold": 0.7,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        estimate_output_quality(**args)  # type: ignore[arg-type]


def test_a_pair_with_few_known_partners_borrows_the_match_component() -> None:
    """A pair whose few shared people are all keyed (2% of 800 records), with
    chance pairs that run high for some records: its CLK links are all chance
    pairs, its runner-ups run low, and its own fit takes their upper tail for
    matches. With the match shape of a pair that has known partners
    (`pooled_match_shape`) only the shares are fitted, and the recall
    estimate is within a point of the truth."""
    strong = fit_output(*_fit_args(_simulate(0, high=0.05)))
    assert strong.basis == "own" and strong.known >= MIN_ANCHORS
    shape = pooled_match_shape([strong])
    assert shape is not None
    for seed in (1, 2, 3):
        weak = _simulate(seed, 800, keyed_share=0.02, partner_share=0.0, high=0.05)
        own = fit_output(*_fit_args(weak))
        assert own.basis == "unanchored" and own.known < MIN_ANCHORS
        pooled = fit_output(*_fit_args(weak), match_shape=shape)
        assert pooled.basis == "pooled" and pooled.model is not None
        assert pooled.model.match_shape == shape
        _precision, recall = _run_truth(weak, 0.7)
        own_estimate = estimate_from_fit(own, threshold=0.7)
        estimate = estimate_from_fit(pooled, threshold=0.7)
        assert estimate.basis == "pooled" and own_estimate.basis == "unanchored"
        assert abs(estimate.est_recall - recall) <= 0.01, (estimate, recall)
        assert abs(own_estimate.est_recall - recall) > 0.02, (own_estimate, recall)


def test_a_pooled_shape_needs_enough_matches_of_own_fits() -> None:
    strong = fit_output(*_fit_args(_simulate(0)))
    weak = fit_output(*_fit_args(_simulate(1, 800, keyed_share=0.02, partner_share=0.0)))
    assert pooled_match_shape([]) is None
    assert pooled_match_shape([weak]) is None  # unanchored fits never lend
    assert pooled_match_shape([strong, weak]) == pooled_match_shape([strong])
    few = fit_output(*_fit_args(_simulate(2, 300, keyed_share=0.5, partner_share=0.05)))
    assert few.basis == "own" and float(few.gamma.sum()) < 20
    assert pooled_match_shape([few]) is None


def _fit_args(run: _Run) -> tuple[Candidates, np.ndarray, float]:
    return run.candidates, run.keyed, FLOOR


# --- the pairs the clustering wrote (three or more parties) ---------------------------


def _best(run: _Run) -> tuple[np.ndarray, np.ndarray]:
    """Each record's best candidate: (its id, its score), -1 and NaN where none."""
    c = run.candidates
    order = np.lexsort((-c.score, c.left))
    left, right, score = c.left[order], c.right[order], c.score[order]
    first = np.r_[True, left[1:] != left[:-1]]
    ids = np.full(len(run.keyed), -1)
    scores = np.full(len(run.keyed), np.nan)
    ids[left[first]] = right[first]
    scores[left[first]] = score[first]
    return ids, scores


def _written_truth(run: _Run, written: np.ndarray) -> tuple[float, float]:
    """Precision and recall of the keyed links plus the written CLK pairs."""
    has = ~run.keyed & (written >= 0)
    right_ones = int(np.count_nonzero(run.partner[has] == written[has]))
    keyed = int(run.keyed.sum())
    return (keyed + right_ones) / (keyed + int(has.sum())), (keyed + right_ones) / (
        keyed + int(run.partnered.sum())
    )


def test_written_estimate_of_the_pairs_a_pair_solve_writes_is_the_pair_estimate() -> None:
    # Two parties: the clustering writes what the pair's own solve does, and
    # both estimates agree.
    run = _simulate(0)
    fit = fit_output(run.candidates, run.keyed, FLOOR)
    _ids, scores = _best(run)
    for threshold in (0.6, 0.7, 0.8):
        kept = ~run.keyed & (scores >= threshold)
        written = estimate_written_quality(
            fit, threshold, sure=run.keyed, scores=np.where(kept, scores, np.nan)
        )
        pair = estimate_from_fit(fit, threshold=threshold)
        assert written.threshold == threshold
        assert written.est_precision == pytest.approx(pair.est_precision, abs=1e-3)
        assert written.est_recall == pytest.approx(pair.est_recall, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_written_estimate_sees_pairs_joined_through_a_third_party_and_partners_taken(
    seed: int,
) -> None:
    """The clustering writes pairs the pair's solve did not (through a third
    party: here 8% of the unlinked records get their best candidate, below
    the threshold, often a chance pair) and takes true partners away (10% of
    the right links lost to a stronger link through a third party). The
    estimate of what was written stays within a point of its truth; the
    pair's own estimate does not."""
    run = _simulate(seed)
    rng = np.random.default_rng(seed + 10)
    threshold = 0.75
    fit = fit_output(run.candidates, run.keyed, FLOOR)
    ids, scores = _best(run)
    kept = ~run.keyed & (scores >= threshold)
    written = np.where(kept, ids, -1)
    joined = ~run.keyed & ~kept & (ids >= 0) & (rng.random(len(ids)) < 0.08)
    written[joined] = ids[joined]
    separated = kept & (run.partner == ids) & (rng.random(len(ids)) < 0.10)
    written[separated] = -1
    estimate = estimate_written_quality(
        fit, threshold, sure=run.keyed, scores=np.where(written >= 0, scores, np.nan)
    )
    precision, recall = _written_truth(run, written)
    assert abs(estimate.est_precision - precision) <= 0.01, (estimate, precision)
    assert abs(estimate.est_recall - recall) <= 0.01, (estimate, recall)
    pair = estimate_from_fit(fit, threshold=threshold)
    assert abs(pair.est_precision - precision) > 0.01 or abs(pair.est_recall - recall) > 0.01


def test_written_pairs_below_the_floor_count_as_false() -> None:
    run = _simulate(4)
    fit = fit_output(run.candidates, run.keyed, FLOOR)
    _ids, scores = _best(run)
    kept = ~run.keyed & (scores >= 0.7)
    base = np.where(kept, scores, np.nan)
    before = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=base)
    # Ten unlinked records joined to partners scoring 0.3 through a third party.
    extra = base.copy()
    extra[np.flatnonzero(np.isnan(base) & ~run.keyed)[:10]] = 0.3
    after = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra)
    written = int(run.keyed.sum() + kept.sum())
    assert after.est_precision == pytest.approx(
        before.est_precision * written / (written + 10), rel=1e-9
    )
    assert after.est_recall == pytest.approx(before.est_recall, rel=1e-9)


def test_a_pair_joined_through_a_third_party_weighs_both_links_and_its_own_score() -> None:
    run = _simulate(5)
    fit = fit_output(run.candidates, run.keyed, FLOOR)
    assert fit.model is not None
    _ids, scores = _best(run)
    kept = ~run.keyed & (scores >= 0.7)
    base = np.where(kept, scores, np.nan)
    before = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=base)
    joined = np.flatnonzero(np.isnan(base) & ~run.keyed)[:20]
    extra = base.copy()
    extra[joined] = 0.3  # below the floor: a non-match by its own score
    via = np.zeros(len(base))
    alone = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via)
    # Two sure links through a third party: true whatever the pair's score.
    via[joined] = 1.0
    sure = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via)
    assert sure.est_recall == pytest.approx(before.est_recall + 20 / fit.matches, rel=1e-9)
    assert sure.est_precision > before.est_precision > alone.est_precision
    # Links no better than even, to a pair with a score no match has.
    via[joined] = 0.5
    doubtful = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via)
    assert doubtful.est_precision == pytest.approx(alone.est_precision, abs=1e-4)
    # The same links to a pair whose own score is a match's.
    extra[joined] = 0.9
    likely = estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via)
    assert likely.est_recall == pytest.approx(before.est_recall + 20 / fit.matches, abs=1e-3)
    with pytest.raises(ValueError, match="via"):
        estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via[:-1])
    via[joined[0]] = 1.5
    with pytest.raises(ValueError, match="via"):
        estimate_written_quality(fit, 0.7, sure=run.keyed, scores=extra, via=via)


@pytest.mark.parametrize(
    ("sure", "scores", "threshold", "message"),
    [
        (np.array([True]), np.array([0.9]), 0.7, "one entry"),
        (np.array([1, 0]), np.array([0.9, 0.8]), 0.7, "one entry"),
        (np.array([False, True]), np.array([1.2, np.nan]), 0.7, r"\[0, 1\]"),
        (np.array([False, True]), np.array([0.9, np.nan]), 0.4, "threshold"),
    ],
)
def test_written_estimate_refuses_bad_input(
    sure: np.ndarray, scores: np.ndarray, threshold: float, message: str
) -> None:
    fit = fit_output(
        Candidates(np.array([0, 1]), np.array([3, 4]), np.array([0.6, 0.9])),
        np.array([False, True]),
        FLOOR,
    )
    with pytest.raises(ValueError, match=message):
        estimate_written_quality(fit, threshold, sure=sure, scores=scores)


def test_dedup_estimate_against_the_truth_of_the_pairs_written(
    tmp_path: Path, intl_schema: LinkageSchema
) -> None:
    """Deduplication of the non-UK profile's file with people up to four times
    (`headcount.tools.intl_profile.dedup_file`), encoded as link-files does.
    Some pairs there score exactly 1 (identical records), which the link
    estimator refused as anchors; the dedup estimate is of the pairs written.
    """
    dedup_file(2000, 1, tmp_path)
    schema = intl_schema
    read = read_identity_file(tmp_path / "dups.csv", read_options(schema, blank_invalid=True))
    present = present_fields([read.identities])
    hierarchy = derive_match_keys(schema.match_keys, present, EXTRA_MATCH_KEYS)
    clks = encode_clks(read.identities, SECRET, with_present_fields(schema.clk, present))
    keys = match_keys(read.identities, SECRET, hierarchy)
    supporting = derive_support_keys(present)
    support = match_keys(read.identities, SECRET, supporting)
    threshold = DEFAULT_LINKAGE_SCHEMA.threshold
    result = dedup_records(clks, threshold, keys=keys, support=support, support_specs=supporting)
    with (tmp_path / "dups_truth.csv").open(newline="", encoding="utf-8") as fh:
        person = {row["record_id"]: row["person_id"] for row in csv.DictReader(fh)}
    truth = _same_person_pairs([person[r] for r in read.record_ids])
    written = set(zip(result.pairs.left.tolist(), result.pairs.right.tolist(), strict=True))
    precision = len(written & truth) / len(written)
    recall = len(written & truth) / len(truth)
    # dedup_records estimates with its keys and pairs: of the pairs written.
    full = result.quality
    assert full is not None
    assert abs(full.est_precision - precision) <= 0.01, (full, precision)
    assert abs(full.est_recall - recall) <= 0.01, (full, recall)


def _same_person_pairs(people: list[str]) -> set[tuple[int, int]]:
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(people):
        rows.setdefault(p, []).append(i)
    return {(a, b) for group in rows.values() for a, b in itertools.combinations(group, 2)}
