"""Attacks through the query interface: asking about one person."""

from __future__ import annotations

from headcount.attacks import ATTACK_PROJECT, AttackResult
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import BudgetExhausted, HeadcountError, PolicyRefused
from headcount.local import LocalFederation

PURPOSE = "Attack suite: check that the federation refuses this query."


def _ask(fed: LocalFederation, name: str, knows: str, spec: QuerySpec) -> AttackResult:
    """Submit ``spec`` as the analyst: success 0 if policy refuses it, 1 if answered."""
    try:
        with fed.analyst() as analyst:
            analyst.query(spec)
    except PolicyRefused as exc:
        return AttackResult(name, "analyst", knows, f"refused: {exc}", 0.0)
    return AttackResult(name, "analyst", knows, "answered", 1.0)


def no_project(fed: LocalFederation) -> AttackResult:
    """An analyst asks outside any approved project (Five Safes: safe projects)."""
    spec = QuerySpec(PURPOSE, "education", "immigration", "immigration_status")
    return _ask(fed, "no-project", "valid analyst credentials, no approved project", spec)


def near_unique_group_by(fed: LocalFederation) -> AttackResult:
    """Group by a near-unique attribute (absence rate, three decimals)."""
    spec = QuerySpec(PURPOSE, "immigration", "education", "absence_rate", project_id=ATTACK_PROJECT)
    return _ask(fed, "near-unique-group-by", "an attribute almost unique per pupil", spec)


def tracker(fed: LocalFederation) -> AttackResult:
    """Repeat one query to average the noise away, or difference overlapping
    queries: each department's budget per period stops it (the games
    game-repetition and game-differencing measure what is left)."""
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        conditions=(Condition("health", (Predicate("gp_registered", ("N",)),)),),
        project_id=ATTACK_PROJECT,
    )
    answered = 0
    refused = ""
    with fed.analyst() as analyst:
        for _ in range(50):
            try:
                analyst.query(spec)
                answered += 1
            except BudgetExhausted as exc:
                refused = str(exc)
                break
            except HeadcountError as exc:
                refused = str(exc)
                break
    eps = fed.config.privacy.default_query_epsilon
    # Averaging k answers of scale 1/eps leaves noise sd sqrt(2)/(eps*sqrt(k)),
    # while rounding to 5 and suppression below 10 remain: one person's
    # presence (a change of 1) stays hidden.
    sd = (2**0.5) / (eps * max(answered, 1) ** 0.5)
    return AttackResult(
        "tracker",
        "analyst",
        "the same question asked repeatedly",
        f"{answered} answered, then refused ({refused[:80]}); averaged noise sd {sd:.2f} "
        "before rounding to 5",
        0.0,
        attempts=answered + 1,
    )
