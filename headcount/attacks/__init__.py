"""The attack suite: each attack runs against a live local federation and
reports what the attacker knew and what it measurably achieved.

``run_attacks`` builds a fresh in-process federation (real servers over mutual
TLS on loopback, synthetic data), runs the ceremony and one linkage epoch, then
each requested attack. An attack that is refused reports success 0; one whose
residual success can be measured reports it.

The privacy games (``game-*``, ``headcount.attacks.games``) are attacks too,
but run only when named (or with ``games=True``): each plays many trials and
reports a measured lower bound on epsilon beside the published one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from headcount.errors import InvalidRequest
from headcount.local import LocalFederation, start_local_federation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AttackResult:
    name: str
    attacker: str  # role
    knows: str  # what the attacker knows or controls
    outcome: str  # what happened, in a sentence
    success_rate: float  # measured share of the attacker's goals achieved, 0-1
    attempts: int = 1
    # The residual success the defaults are designed to allow: 0 for attacks
    # that must be refused outright, a stated target for measured ones.
    accepted: float = 0.0
    # Privacy games only (headcount.attacks.games): secret bits guessed and
    # guessed right, the Clopper-Pearson 95% lower bound on epsilon those
    # imply, and the epsilon the federation publishes for the target's
    # department per period. None for the other attacks.
    trials: int | None = None
    successes: int | None = None
    epsilon_bound: float | None = None
    epsilon_claimed: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.success_rate <= 1.0:
            raise ValueError("success_rate is in [0, 1]")
        if not 0.0 <= self.accepted <= 1.0:
            raise ValueError("accepted is in [0, 1]")
        game = (self.trials, self.successes, self.epsilon_bound, self.epsilon_claimed)
        if any(v is not None for v in game) and any(v is None for v in game):
            raise ValueError("a game reports trials, successes and both epsilons, or none")
        if self.trials is not None and self.successes is not None:
            if self.trials < 1 or not 0 <= self.successes <= self.trials:
                raise ValueError("a game has trials >= 1 and 0 <= successes <= trials")

    @property
    def is_game(self) -> bool:
        return self.epsilon_bound is not None

    @property
    def defended(self) -> bool:
        """Whether the attack stayed within what the defaults allow: for a game,
        whether its lower bound on epsilon stays within the published epsilon."""
        if self.epsilon_bound is not None and self.epsilon_claimed is not None:
            return self.epsilon_bound <= self.epsilon_claimed
        return self.success_rate <= self.accepted


Attack = Callable[[LocalFederation], AttackResult]

# An approved project covering every department, so that the query attacks
# meet the defences they aim at rather than the missing-project refusal.
ATTACK_PROJECT = "attack-suite"


def _registry() -> dict[str, Attack]:
    from headcount.attacks import (
        audit,
        clk_frequency,
        clk_graph,
        clk_patterns,
        encodings,
        games,
        policy,
        protocol,
    )

    return {
        "no-project": policy.no_project,
        "near-unique-group-by": policy.near_unique_group_by,
        "tracker": policy.tracker,
        "forged-certificate": protocol.forged_certificate,
        "impersonation": protocol.impersonation,
        "replayed-ceremony": protocol.replayed_ceremony,
        "reordered-chunks": protocol.reordered_chunks,
        "amplified-contribution": protocol.amplified_contribution,
        "replayed-epoch": protocol.replayed_epoch,
        "unannounced-query": protocol.unannounced_query,
        "audit-tampering": audit.tampering,
        "dictionary-without-secret": encodings.dictionary_without_secret,
        "clk-frequency": clk_frequency.frequency,
        "clk-pattern-mining": clk_patterns.pattern_mining,
        "clk-graph-matching": clk_graph.graph_matching,
        **games.games(),
    }


def _is_game(name: str) -> bool:
    return name.startswith("game-")


def _approve_project(fed: LocalFederation) -> None:
    fed.approve_project(
        ATTACK_PROJECT,
        "Attack suite",
        "Demonstrate that the federation refuses attempts to single out a person.",
    )


def attack_names() -> list[str]:
    """The attacks run by default (every registered one but the games)."""
    return [n for n in _registry() if not _is_game(n)]


def game_names() -> list[str]:
    """The privacy games (``game-*``), each run only when asked for."""
    return [n for n in _registry() if _is_game(n)]


def run_attacks(
    names: Sequence[str],
    *,
    people: int = 3000,
    seed: int = 5,
    directory: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    games: bool = False,
    trials: int | None = None,
) -> list[AttackResult]:
    """Run the named attacks against a fresh local federation: when ``names`` is
    empty, every attack but the games, or (``games``) every game.

    Each game gets a federation of its own (same people and seed), so that one
    game's trials, and the audit log they grow, neither slow nor touch the
    next. ``trials`` overrides each game's own number of trials. Raises
    InvalidRequest naming an unknown attack.
    """
    from headcount.attacks.games import games as game_registry

    registry = _registry()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise InvalidRequest(f"unknown attack(s) {unknown}; known: {list(registry)}")
    chosen = list(names) or (game_names() if games else attack_names())
    played = game_registry()
    results: dict[str, AttackResult] = {}
    with tempfile.TemporaryDirectory(prefix="headcount-attack-") as tmp:
        root = directory or Path(tmp)
        attacks = [n for n in chosen if not _is_game(n)]
        if attacks:
            with _linked_federation(root / "federation", people, seed, progress) as fed:
                for name in attacks:
                    progress(f"attack: {name}")
                    results[name] = registry[name](fed)
        for name in (n for n in chosen if _is_game(n)):
            with _linked_federation(root / name, people, seed, progress) as fed:
                progress(f"attack: {name}")
                if trials is not None:
                    results[name] = played[name](fed, trials=trials)
                else:
                    results[name] = registry[name](fed)
    return [results[n] for n in chosen]


@contextmanager
def _linked_federation(
    directory: Path, people: int, seed: int, progress: Callable[[str], None]
) -> Iterator[LocalFederation]:
    """A started federation after the ceremony and one epoch, with
    ``ATTACK_PROJECT`` approved."""
    progress(f"starting a local federation of {people} synthetic people")
    with start_local_federation(directory, people=people, seed=seed) as fed:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        _approve_project(fed)
        yield fed
