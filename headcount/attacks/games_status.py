"""Games on one pupil's immigration status: status A or B, one period per trial.

The target is a pupil known to both education and immigration (linked in the
current epoch, and truly the same person), alone in their year group in their
local authority where the data allow, so a query filtered to that pair counts
the target and nobody else. The secret bit sets the status of the target's
immigration record to A (their own) or B (another), through immigration's file
and a new linkage epoch; every other record stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from headcount.attacks import ATTACK_PROJECT, AttackResult
from headcount.attacks.games import (
    DEFAULT_TRIALS,
    PURPOSE,
    Outcome,
    check_trials,
    decide,
    game_result,
    new_period,
    relink,
    secret_bit,
    spend_period,
    tapped,
)
from headcount.attacks.games_data import (
    DataFiles,
    fabricated,
    linked,
    person_groups,
    read_csv,
    truth,
)
from headcount.attacks.games_guess import (
    Sighting,
    log_likelihood_ratio,
    released_sightings,
    sdc_policy,
)
from headcount.departments import STATUSES
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import InvalidRequest
from headcount.local import LocalFederation

# Fabricated pupils beside the target in a padded origin's file.
PADDING = 19


@dataclass(frozen=True, slots=True)
class Pupil:
    education_id: str
    immigration_id: str
    local_authority: str
    year_group: str
    status: str  # at immigration
    alone: bool  # the only pupil of their year group in their local authority


def choose_pupil(fed: LocalFederation, also: Sequence[str] = ()) -> Pupil:
    """The target: a pupil truly linked to immigration (and to each of ``also``)
    in the latest epoch, alone in their year group where one is; the same on
    every call for the same federation."""
    epoch = fed.coordinator.coordinator.store.latest_epoch()
    people = truth(fed)

    def true_links(party: str) -> set[tuple[str, str]]:
        column = f"{party}_id"
        pairs = zip(people["education_id"], people[column], strict=True)
        real = {(e, i) for e, i in pairs if e and i}
        return fed.linked_record_ids(epoch, "education", party) & real

    links = true_links("immigration")
    for party in also:
        ok = {e for e, _ in true_links(party)}
        links = {(e, i) for e, i in links if e in ok}
    if not links:
        raise InvalidRequest("no pupil is linked to immigration: no target for the game")
    edu = read_csv(fed.config.party("education").data).set_index("record_id")
    imm = read_csv(fed.config.party("immigration").data).set_index("record_id")
    sizes: dict[tuple[str, str], int] = {}
    for la, year in zip(edu["local_authority"], edu["year_group"], strict=True):
        sizes[(str(la), str(year))] = sizes.get((str(la), str(year)), 0) + 1
    pupils = []
    for e, i in links:
        la, year = str(edu.at[e, "local_authority"]), str(edu.at[e, "year_group"])
        status = str(imm.at[i, "immigration_status"])
        pupils.append(Pupil(e, i, la, year, status, sizes[(la, year)] == 1))
    return min(pupils, key=lambda p: (not p.alone, p.education_id))


def other_status(status: str) -> str:
    return next(s for s in STATUSES if s != status)


def with_status(imm: pd.DataFrame, record_id: str, status: str) -> pd.DataFrame:
    out = imm.copy()
    out.loc[out["record_id"] == record_id, "immigration_status"] = status
    return out


def single_person(target: Pupil, conditions: tuple[Condition, ...] = ()) -> QuerySpec:
    """Pupils of the target's year group in their local authority, by status."""
    return QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(
            Predicate("local_authority", (target.local_authority,)),
            Predicate("year_group", (target.year_group,)),
        ),
        conditions=conditions,
        project_id=ATTACK_PROJECT,
    )


def expected_counts(
    fed: LocalFederation, target: Pupil, a: str, b: str, linked_to: Sequence[str] = ()
) -> dict[str, tuple[int, int]]:
    """Cells A and B of ``single_person`` if the target has status A (bit 1) or
    B (bit 0): the others of their year group (linked to each of ``linked_to``)
    counted as the latest epoch links them."""
    edu = read_csv(fed.config.party("education").data)
    same = edu[
        (edu["local_authority"] == target.local_authority)
        & (edu["year_group"] == target.year_group)
        & (edu["record_id"] != target.education_id)
    ]
    others = list(same["record_id"])
    for party in linked_to:
        link = linked(fed, "education", party)
        others = [o for o in others if o in link]
    status = person_groups(fed, "education", others, "immigration", "immigration_status")
    count = {g: sum(1 for s in status.values() if s == g) for g in (a, b)}
    return {a: (count[a] + 1, count[a]), b: (count[b], count[b] + 1)}


def _status_trial(fed: LocalFederation, files: DataFiles, imm: pd.DataFrame, target: Pupil) -> int:
    """Draw the bit, give the target status A (1) or B (0), relink and start a
    new period; return the bit."""
    bit = secret_bit()
    status = target.status if bit else other_status(target.status)
    files.write("immigration", with_status(imm, target.immigration_id, status))
    relink(fed)
    new_period(fed)
    return bit


def _released(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.release is not None]


def _scale(outcomes: Sequence[Outcome]) -> float:
    released = _released(outcomes)
    return released[0].release.noise_scale if released and released[0].release else 1.0


def padded_origin(
    fed: LocalFederation,
    trials: int = DEFAULT_TRIALS,
    *,
    all_shares: bool = False,
    query_epsilon: float = 0.0,
) -> AttackResult:
    """Education (the origin, which decrypts) pads its file so that the cells of
    statuses A and B can hold nobody but the target, then sees its own noisy
    decryptions of "pupils by immigration status" until the period's budget is
    spent.

    The padding: fabricated pupils, and those of its real pupils that the
    latest epoch does not link to an immigration record of status A or B (the
    adversary knows everyone else). Keeping them also keeps the linkage's
    quality estimate fed with real pairs: with the target alone it would fit
    one score per pair of departments, which takes seconds per epoch.

    The origin also knows the coordinator's noise share: the coordinator
    sends it in the clear for the origin to add (docs/privacy.md), so only the
    immigration node's share stands between the origin and the count.
    ``all_shares`` removes the protection (for tests): the origin also learns
    every noise share. ``query_epsilon`` 0 asks at the federation's default.
    """
    check_trials(trials)
    target = choose_pupil(fed)
    a, b = target.status, other_status(target.status)
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        epsilon=query_epsilon,
        project_id=ATTACK_PROJECT,
    )
    policy, wins, asked = sdc_policy(fed), 0, 0
    with DataFiles(fed, ("education", "immigration")) as files, tapped(fed) as taps:
        edu, imm = files.original("education"), files.original("immigration")
        ids = list(edu["record_id"])
        groups = person_groups(fed, "education", ids, "immigration", "immigration_status")
        keep = edu[[i == target.education_id or groups[i] not in (a, b) for i in ids]]
        padding = fabricated(edu, PADDING, "education", (2008, 2020))
        files.write("education", pd.concat([keep, padding]))
        rest = [i for i in [*keep["record_id"], *padding["record_id"]] if i != target.education_id]
        for _ in range(trials):
            bit = _status_trial(fed, files, imm, target)
            # Everyone else as this epoch links them (none in A or B, barring
            # a linkage that changed its mind).
            found = person_groups(fed, "education", rest, "immigration", "immigration_status")
            n = {g: sum(1 for v in found.values() if v == g) for g in (a, b)}
            expected = {a: (n[a] + 1, n[a]), b: (n[b], n[b] + 1)}
            outcomes = spend_period(fed, [spec], taps=taps)
            sightings = []
            for o in _released(outcomes):
                if all_shares and not o.shares:
                    raise InvalidRequest("no noise share was tapped")
                knowing = list(o.shares) if all_shares else ["coordinator"]
                if any(h not in o.shares for h in knowing):
                    raise InvalidRequest(f"the noise shares of {knowing} were not all tapped")
                known = o.known_noise(knowing)
                for group, (one, zero) in expected.items():
                    noisy = o.decrypted[group]
                    sightings.append(Sighting(noisy, True, known.get(group, 0), one, zero))
            asked += len(_released(outcomes))
            known_shares = 2 if all_shares else 1
            llr = log_likelihood_ratio(sightings, _scale(outcomes), 2, known_shares, policy)
            wins += decide(llr) == bit
    return game_result(
        fed,
        "game-padded-origin",
        "party node (education, the origin) with its own decryptions and "
        + ("EVERY noise share" if all_shares else "the coordinator's share"),
        f"its file: the target, {PADDING} fabricated pupils and {len(keep) - 1} of its own "
        f"that are in neither cell; the target's status is {a} or {b}",
        trials,
        wins,
        f"{asked} tables decrypted",
    )


def differencing(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """An analyst asks for the target's local authority with and without the
    target's year group, in pairs until refused, and sums the differences."""
    check_trials(trials)
    target = choose_pupil(fed)
    a, b = target.status, other_status(target.status)
    years = sorted(set(read_csv(fed.config.party("education").data)["year_group"]), key=int)
    first = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(Predicate("local_authority", (target.local_authority,)),),
        project_id=ATTACK_PROJECT,
    )
    second = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(
            Predicate("local_authority", (target.local_authority,)),
            Predicate("year_group", tuple(y for y in years if y != target.year_group)),
        ),
        project_id=ATTACK_PROJECT,
    )
    wins, pairs = 0, 0
    with DataFiles(fed, ("immigration",)) as files:
        imm = files.original("immigration")
        for _ in range(trials):
            bit = _status_trial(fed, files, imm, target)
            released = _released(spend_period(fed, [first, second]))
            score = 0
            with_all = [o.cells() for o in released if o.spec == 0]
            without = [o.cells() for o in released if o.spec == 1]
            for one, two in zip(with_all, without, strict=False):
                # Withheld cells read as 0: the analyst has nothing better.
                def diff(g: str, one: Any = one, two: Any = two) -> int:
                    return int(one[g][0] or 0) - int(two[g][0] or 0)

                score += diff(a) - diff(b)
                pairs += 1
            wins += decide(score) == bit
    return game_result(
        fed,
        "game-differencing",
        "analyst",
        f"the target is {'the only' if target.alone else 'a'} year-{target.year_group} pupil "
        f"in {target.local_authority}; status {a} or {b}",
        trials,
        wins,
        f"{pairs} pairs of tables",
    )


def repetition(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """An analyst asks the same single-person query once per linkage epoch, over
    new epochs until refused, and weighs every answer."""
    check_trials(trials)
    target = choose_pupil(fed)
    a, b = target.status, other_status(target.status)
    spec = single_person(target)
    expected = expected_counts(fed, target, a, b)
    policy, wins, asked = sdc_policy(fed), 0, 0
    with DataFiles(fed, ("immigration",)) as files:
        imm = files.original("immigration")
        for _ in range(trials):
            bit = _status_trial(fed, files, imm, target)
            outcomes = spend_period(fed, [spec], before=lambda: relink(fed))
            sightings = [
                s for o in _released(outcomes) for s in released_sightings(o.cells(), expected)
            ]
            asked += len(_released(outcomes))
            llr = log_likelihood_ratio(sightings, _scale(outcomes), 2, 0, policy)
            wins += decide(llr) == bit
    return game_result(
        fed,
        "game-repetition",
        "analyst",
        f"the target's year group in {target.local_authority} ({len(expected)} cells "
        f"move); status {a} or {b}; one query per linkage epoch",
        trials,
        wins,
        f"{asked} answers over as many epochs",
    )
