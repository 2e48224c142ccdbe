"""The attack suite: each attack runs against a live local federation and
reports what the attacker knew and what it measurably achieved.

``run_attacks`` builds a fresh in-process federation (real servers over mutual
TLS on loopback, synthetic data), runs the ceremony and one linkage epoch, then
each requested attack. An attack that is refused reports success 0; one whose
residual success can be measured reports it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
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

    def __post_init__(self) -> None:
        if not 0.0 <= self.success_rate <= 1.0:
            raise ValueError("success_rate is in [0, 1]")
        if not 0.0 <= self.accepted <= 1.0:
            raise ValueError("accepted is in [0, 1]")

    @property
    def defended(self) -> bool:
        """Whether the attack stayed within what the defaults allow."""
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
        differencing,
        encodings,
        policy,
        protocol,
    )

    return {
        "no-project": policy.no_project,
        "single-person": policy.single_person,
        "near-unique-group-by": policy.near_unique_group_by,
        "probe-upload": policy.probe_upload,
        "tracker": policy.tracker,
        "differencing": differencing.differencing,
        "forged-certificate": protocol.forged_certificate,
        "impersonation": protocol.impersonation,
        "replayed-ceremony": protocol.replayed_ceremony,
        "reordered-chunks": protocol.reordered_chunks,
        "replayed-epoch": protocol.replayed_epoch,
        "unannounced-query": protocol.unannounced_query,
        "audit-tampering": audit.tampering,
        "dictionary-without-secret": encodings.dictionary_without_secret,
        "clk-frequency": clk_frequency.frequency,
        "clk-pattern-mining": clk_patterns.pattern_mining,
        "clk-graph-matching": clk_graph.graph_matching,
    }


def _approve_project(fed: LocalFederation) -> None:
    fed.approve_project(
        ATTACK_PROJECT,
        "Attack suite",
        "Demonstrate that the federation refuses attempts to single out a person.",
    )


def attack_names() -> list[str]:
    return list(_registry())


def run_attacks(
    names: Sequence[str],
    *,
    people: int = 3000,
    seed: int = 5,
    directory: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[AttackResult]:
    """Run the named attacks (all when empty) against a fresh local federation.

    Raises InvalidRequest naming an unknown attack.
    """
    registry = _registry()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise InvalidRequest(f"unknown attack(s) {unknown}; known: {list(registry)}")
    chosen = list(names) or list(registry)
    with tempfile.TemporaryDirectory(prefix="headcount-attack-") as tmp:
        root = directory or Path(tmp)
        progress(f"starting a local federation of {people} synthetic people")
        with start_local_federation(root / "federation", people=people, seed=seed) as fed:
            with fed.operator() as op:
                op.run_ceremony()
                op.run_linkage()
            _approve_project(fed)
            results = []
            for name in chosen:
                progress(f"attack: {name}")
                results.append(registry[name](fed))
    return results
