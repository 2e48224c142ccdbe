"""Games on the noise shares: one share-holder subtracts the share it drew.

A query's noise is the sum of shares drawn by the coordinator and every node of
the chain but the origin; any all-but-one of them sum to the full discrete
Laplace noise (``headcount.privacy.noise``), so a share-holder that subtracts
its own share from a release still faces noise of the published scale.

The chain is education -> immigration, so the share-holders are the coordinator
and immigration, and the target's record is at neither: the target is a pupil
not known to immigration, and the secret bit is whether their education record
carries the free-school-meals value the query filters on (in the population or
out of it), set through education's file and a new linkage epoch. Their cell
("not known to immigration") is large, so it is published every time and only
the noise and the rounding stand between a share-holder and the count.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from typing import Any

from headcount.attacks import ATTACK_PROJECT, AttackResult
from headcount.attacks.games import (
    DEFAULT_TRIALS,
    PURPOSE,
    check_trials,
    decide,
    game_result,
    new_period,
    relink,
    secret_bit,
    spend_period,
    tapped,
)
from headcount.attacks.games_data import DataFiles, person_groups, read_csv
from headcount.attacks.games_guess import (
    Sighting,
    log_likelihood_ratio,
    release_cells,
    released_sightings,
    sdc_policy,
)
from headcount.domain.events import TableReleased
from headcount.domain.query import Predicate, QuerySpec, unlinked_group
from headcount.errors import InvalidRequest
from headcount.local import LocalFederation

HOLDERS = ("coordinator", "immigration")  # who draws a share in this chain


def _coordinator_view(fed: LocalFederation, query_id: str) -> Mapping[str, Any]:
    """A release as the coordinator's own store keeps it."""
    path = fed.coordinator.coordinator.store.path
    with closing(sqlite3.connect(path, timeout=30)) as db:
        row = db.execute("SELECT release FROM releases WHERE query_id = ?", (query_id,)).fetchone()
    if row is None:
        raise InvalidRequest(f"the coordinator stored no release of {query_id}")
    table: Mapping[str, Any] = json.loads(row[0])
    return table


def _node_view(fed: LocalFederation, party: str, query_id: str) -> Mapping[str, Any]:
    """A release as ``party``'s own replica of the audit log holds it."""
    for event in reversed(
        fed.nodes[party].node.audit.find(TableReleased.KIND, "$.query_id", query_id)
    ):
        return TableReleased.from_body(event.body).table
    raise InvalidRequest(f"{party}'s audit replica has no release of {query_id}")


def share_game(
    fed: LocalFederation,
    trials: int,
    holder: str,
    *,
    all_shares: bool = False,
) -> AttackResult:
    """``holder`` (one of ``HOLDERS``) reads each release in its own records and
    subtracts its own noise shares; with ``all_shares`` (the protection removed,
    for tests) it subtracts every share-holder's."""
    check_trials(trials)
    if holder not in HOLDERS:
        raise InvalidRequest(f"the share-holders of this game are {HOLDERS}, not {holder!r}")
    edu = read_csv(fed.config.party("education").data)
    ids = sorted(edu["record_id"])
    unknown = unlinked_group("immigration")
    groups = person_groups(fed, "education", ids, "immigration", "immigration_status")
    # The target: the first pupil the latest epoch links to no immigration
    # record, so that its cell is large and published (only noise and rounding
    # stand between a share-holder and the count); it is counted or not by its
    # free-school-meals value.
    target_id = next(i for i in ids if groups[i] == unknown)
    row = edu[edu["record_id"] == target_id].iloc[0]
    la, fsm = str(row["local_authority"]), str(row["fsm"])
    flip = "N" if fsm == "Y" else "Y"
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(Predicate("local_authority", (la,)), Predicate("fsm", (fsm,))),
        project_id=ATTACK_PROJECT,
    )
    same = edu[(edu["local_authority"] == la) & (edu["fsm"] == fsm)]
    others = sum(1 for i in same["record_id"] if i != target_id and groups[i] == unknown)
    expected = {unknown: (others + 1, others)}
    knowing = HOLDERS if all_shares else (holder,)
    policy, wins = sdc_policy(fed), 0
    with DataFiles(fed, ("education",)) as files, tapped(fed) as taps:
        original = files.original("education")
        for _ in range(trials):
            bit = secret_bit()
            frame = original.copy()
            frame.loc[frame["record_id"] == target_id, "fsm"] = fsm if bit else flip
            files.write("education", frame)
            relink(fed)
            new_period(fed)
            outcomes = spend_period(fed, [spec], taps=taps)
            sightings: list[Sighting] = []
            scale = 1.0
            for o in outcomes:
                if o.release is None:
                    continue
                if any(h not in o.shares for h in knowing):
                    raise InvalidRequest(f"the noise shares of {knowing} were not all tapped")
                query_id, scale = o.release.query_id, o.release.noise_scale
                seen = (
                    _coordinator_view(fed, query_id)
                    if holder == "coordinator"
                    else _node_view(fed, holder, query_id)
                )
                known = o.known_noise(knowing)
                sightings += released_sightings(release_cells(seen), expected, known)
            llr = log_likelihood_ratio(sightings, scale, len(HOLDERS), len(knowing), policy)
            wins += decide(llr) == bit
    where = "its own store" if holder == "coordinator" else "its own audit replica"
    return game_result(
        fed,
        f"game-{'coordinator' if holder == 'coordinator' else 'node'}-share",
        f"{'coordinator' if holder == 'coordinator' else f'party node ({holder})'}: "
        f"releases in {where}, " + ("EVERY noise share" if all_shares else "its own noise shares"),
        f"the target is a pupil of {la} not known to immigration, in the cell of {others} "
        "others or not, by their free-school-meals value",
        trials,
        wins,
        "the other share still carries the full noise" if not all_shares else "no noise left",
    )


def coordinator_share(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """The coordinator subtracts the noise shares it drew from what it stores."""
    return share_game(fed, trials, "coordinator")


def node_share(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """Immigration, the share-holding node of the chain, subtracts its own
    shares from the releases in its audit replica."""
    return share_game(fed, trials, "immigration")
