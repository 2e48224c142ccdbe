"""Attacks through the query interface: asking about one person."""

from __future__ import annotations

from typing import cast

import pandas as pd

from headcount.attacks import ATTACK_PROJECT, AttackResult
from headcount.errors import BudgetExhausted, HeadcountError, PolicyRefused
from headcount.local import LocalFederation
from headcount.query import Condition, Predicate, QuerySpec

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


def single_person(fed: LocalFederation) -> AttackResult:
    """An analyst narrows the population with filters until it is one pupil."""
    edu = pd.read_csv(fed.config.party("education").data, dtype=str, keep_default_na=False)
    # The rarest combination of approved attributes the analyst can name.
    keys = ["local_authority", "year_group", "sen", "fsm"]
    sizes = edu.groupby(keys).size()
    smallest = tuple(str(v) for v in cast(tuple[str, ...], sizes.idxmin()))
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=tuple(Predicate(k, (v,)) for k, v in zip(keys, smallest, strict=True)),
        project_id=ATTACK_PROJECT,
    )
    return _ask(fed, "single-person", f"filters selecting {int(sizes.min())} pupil(s)", spec)


def near_unique_group_by(fed: LocalFederation) -> AttackResult:
    """Group by a near-unique attribute (absence rate, three decimals)."""
    spec = QuerySpec(PURPOSE, "immigration", "education", "absence_rate", project_id=ATTACK_PROJECT)
    return _ask(fed, "near-unique-group-by", "an attribute almost unique per pupil", spec)


def probe_upload(fed: LocalFederation) -> AttackResult:
    """A department uploads a file of a few chosen people to learn whether they
    are known to immigration, then asks for its table."""
    party = fed.config.party("justice")
    data = pd.read_csv(party.data, dtype=str, keep_default_na=False)
    original = party.data.read_bytes()
    targets = 3
    data.head(targets).to_csv(party.data, index=False)
    try:
        with fed.operator() as op:
            op.run_linkage()
        spec = QuerySpec(
            PURPOSE, "justice", "immigration", "immigration_status", project_id=ATTACK_PROJECT
        )
        with fed.analyst() as analyst:
            analyst.query(spec)
        outcome, success = "answered", 1.0
    except PolicyRefused as exc:
        outcome, success = f"refused: {exc}", 0.0
    finally:
        party.data.write_bytes(original)
        with fed.operator() as op:
            op.run_linkage()
    return AttackResult(
        "probe-upload",
        "party node (justice) + analyst",
        f"a department file of {targets} chosen people",
        outcome,
        success,
    )


def tracker(fed: LocalFederation) -> AttackResult:
    """Repeat one query to average the noise away, or difference overlapping
    queries: the per-epoch budget stops it."""
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
