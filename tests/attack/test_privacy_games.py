"""Privacy games against a live federation (``headcount.attacks.games``).

Each game plays its trials through the real servers, and its measured lower
bound on epsilon must stay within the epsilon the federation publishes. With
a handful of trials a bound is weak evidence (below 12 trials not even a
perfect guesser can prove epsilon > 1), so one test also shows that a game
does win once its protection is removed; benchmarks/bench_privacy.py plays
the full-size games.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from headcount.attacks import (
    AttackResult,
    _approve_project,
    attack_names,
    game_names,
)
from headcount.attacks.games import games, tapped
from headcount.attacks.games_guess import Sighting, log_likelihood_ratio
from headcount.attacks.games_status import padded_origin
from headcount.cli import cli
from headcount.local import LocalFederation, start_local_federation
from headcount.protect.sdc import SdcPolicy

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

# 2,500 people (about 370 pupils, 60 justice records): large enough that no
# party pair is so small that the linkage's quality estimate crawls, small
# enough for about a second per query period.
PEOPLE = 2500
SEED = 5
TRIALS = {
    "game-probe-linkage": 12,
    "game-padded-origin": 10,
    "game-differencing": 8,
    "game-repetition": 5,
    "game-refusal-oracle": 8,
    "game-household-fanout": 8,
    "game-coordinator-share": 8,
    "game-node-share": 8,
}
# 19 of 20 right proves epsilon >= 1.11 at 95%: room for one epoch whose
# linkage misses the target (then neither value of the bit fits what it sees).
SANITY_TRIALS = 20


def _digests(fed: LocalFederation) -> dict[str, str]:
    return {
        p: hashlib.sha256(fed.config.party(p).data.read_bytes()).hexdigest()
        for p in fed.config.party_names
    }


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[LocalFederation]:
    """A federation (1024-bit test keys) after the ceremony and one epoch, with
    the attack suite's project approved: a fresh one per game, since every
    node verifies its whole audit replica before each hop of a query, so a
    query costs more the longer the log that earlier games grew."""
    federation = start_local_federation(tmp_path / "fed", people=PEOPLE, seed=SEED)
    try:
        with federation.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        _approve_project(federation)
        yield federation
    finally:
        federation.stop()


@pytest.mark.parametrize("name", list(TRIALS))
def test_game_stays_within_the_published_epsilon(fed: LocalFederation, name: str) -> None:
    before = _digests(fed)
    result = games()[name](fed, trials=TRIALS[name])
    log.info("%s: %s", result.name, result.outcome)
    assert result.name == name
    assert result.is_game
    assert result.trials is not None and result.trials >= TRIALS[name]
    assert result.successes is not None and 0 <= result.successes <= result.trials
    assert result.epsilon_claimed == fed.config.privacy.epsilon_per_period
    assert result.epsilon_bound is not None
    assert result.epsilon_bound <= result.epsilon_claimed, result.outcome
    assert result.defended
    # Every game puts the files back and leaves a fresh period behind it.
    assert _digests(fed) == before
    for p in fed.config.party_names:
        assert fed.nodes[p].node.ledger.spent() == 0.0
        assert fed.coordinator.coordinator.budget_remaining(p) == pytest.approx(
            fed.config.privacy.epsilon_per_period
        )


def test_the_origin_wins_once_it_knows_every_noise_share(fed: LocalFederation) -> None:
    """The protection removed: the decrypting origin learns every share (the
    noise split is what stops it), so its padded population gives the target
    away in every trial and the game proves more than the published epsilon."""
    result = padded_origin(
        fed,
        trials=SANITY_TRIALS,
        all_shares=True,
        query_epsilon=fed.config.privacy.epsilon_per_period,
    )
    log.info("%s: %s", result.name, result.outcome)
    assert result.trials == SANITY_TRIALS
    assert result.epsilon_bound is not None and result.epsilon_claimed is not None
    assert result.epsilon_bound > result.epsilon_claimed, result.outcome
    assert not result.defended


def test_taps_attribute_each_share_to_its_holder(fed: LocalFederation) -> None:
    from headcount.attacks import ATTACK_PROJECT
    from headcount.attacks.games import PURPOSE, new_period, spend_period
    from headcount.domain.query import QuerySpec

    spec = QuerySpec(
        PURPOSE, "education", "immigration", "immigration_status", project_id=ATTACK_PROJECT
    )
    new_period(fed)
    try:
        with tapped(fed) as taps:
            outcomes = spend_period(fed, [spec], taps=taps)
    finally:
        new_period(fed)
    released = [o for o in outcomes if o.release is not None]
    period = fed.config.privacy.epsilon_per_period
    assert len(released) == math.floor(period / fed.config.privacy.default_query_epsilon + 1e-9)
    assert outcomes[-1].budget and "budget" in outcomes[-1].refusal
    for o in released:
        # Coordinator and the one non-origin node of the chain; the origin
        # (education) holds no share and is the only one to decrypt.
        assert set(o.shares) == {"coordinator", "immigration"}
        assert set(o.decrypted) == set(o.cells())
        noise = o.known_noise(["coordinator", "immigration"])
        assert set(noise) == set(o.cells())


# -- without a federation ------------------------------------------------------------
def test_likelihood_ratio_points_at_the_truth() -> None:
    policy = SdcPolicy()
    exact_one = [Sighting(7, True, 2, 5, 4)]  # observed 7 = 5 + 2: bit 1
    assert log_likelihood_ratio(exact_one, 8.0, 2, 2, policy) > 100
    exact_zero = [Sighting(6, True, 2, 5, 4)]
    assert log_likelihood_ratio(exact_zero, 8.0, 2, 2, policy) < -100
    # Published 40 sits nearer 41 than 0: evidence for bit 1, but not proof.
    released = [Sighting(40, False, 0, 41, 0)]
    assert 0 < log_likelihood_ratio(released, 8.0, 2, 0, policy) < math.inf
    # Knowing one share of two, the rest is still noise: a weaker, finite ratio.
    one_share = [Sighting(None, False, 0, 1, 0)]
    assert -5 < log_likelihood_ratio(one_share, 8.0, 2, 1, policy) < 0


def test_game_results_carry_all_their_fields_or_none() -> None:
    with pytest.raises(ValueError, match="game reports"):
        AttackResult("g", "analyst", "k", "o", 0.5, trials=10)
    with pytest.raises(ValueError, match="successes"):
        AttackResult(
            "g", "a", "k", "o", 0.5, trials=4, successes=5, epsilon_bound=0.0, epsilon_claimed=1.0
        )
    done = AttackResult(
        "g", "a", "k", "o", 0.9, trials=40, successes=36, epsilon_bound=1.2, epsilon_claimed=1.0
    )
    assert done.is_game and not done.defended
    assert AttackResult("a", "b", "c", "refused", 0.0).defended


def test_games_are_listed_apart_from_the_attacks() -> None:
    assert game_names() == list(games())
    assert all(n.startswith("game-") for n in game_names())
    assert not set(game_names()) & set(attack_names())
    assert set(TRIALS) == set(game_names())
    result = CliRunner().invoke(cli, ["attack", "--list", "--games"])
    assert result.exit_code == 0
    assert result.output.split() == game_names()


def test_unknown_trials_are_refused() -> None:
    from headcount.attacks.games import check_trials
    from headcount.errors import InvalidRequest

    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidRequest):
            check_trials(bad)  # type: ignore[arg-type]
