"""Games on what a record's presence does: a probe in one's own file, a pupil
inside or outside a filter, an adult's custody record in or out.

Department sizes are published (each department's own, by design), so a record
"out" of a file is replaced by a stand-in nobody else holds: the size stays
the same under both values of the secret bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

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
)
from headcount.attacks.games_data import (
    DATE_FORMATS,
    DataFiles,
    fabricated,
    person_groups,
    read_csv,
    truth,
)
from headcount.attacks.games_guess import log_likelihood_ratio, released_sightings, sdc_policy
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import InvalidRequest
from headcount.local import LocalFederation
from headcount.register import load_register

PROBER = "justice"  # the department that plants probes in its own file


# -- a probe record and a linkage epoch ----------------------------------------------
def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = repr(value)


def _public_view(fed: LocalFederation, prober: str) -> dict[str, str]:
    """What the prober sees of the latest epoch, flattened: every audit event
    from its start in the prober's own replica, and the public register."""
    events = fed.nodes[prober].node.audit.events()
    start = max(i for i, e in enumerate(events) if e.kind == "epoch_started")
    out: dict[str, str] = {"kinds": repr([e.kind for e in events[start:]])}
    for n, e in enumerate(events[start:]):
        _flatten(f"event{n}.{e.kind}", dict(e.body), out)
    register = load_register(fed.config)
    out["register.verified"] = repr(register.verification.ok)
    _flatten("register.epoch", dataclasses.asdict(register.epochs[-1]), out)
    _flatten("register.budgets", [dataclasses.asdict(b) for b in register.budgets], out)
    return out


def _probe(template: pd.DataFrame, person: pd.Series) -> pd.DataFrame:
    """A record in the prober's format carrying ``person``'s identity."""
    row = template.iloc[[0]].copy()
    born = datetime.strptime(str(person["date_of_birth"]), "%Y-%m-%d")
    row["record_id"] = "PROBE-1"
    for column in ("first_name", "last_name", "sex", "postcode", "address", "local_authority"):
        row[column] = person[column]
    row["date_of_birth"] = born.strftime(DATE_FORMATS[PROBER])
    return row


def probe_linkage(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """Justice adds a probe with a child's identity (the child is known to
    immigration) or a made-up one, runs a linkage epoch, and compares what it
    then sees with what it saw before the probe."""
    check_trials(trials)
    people = truth(fed)
    children = people[
        (people["age"] < 18) & (people["immigration_id"] != "") & (people[f"{PROBER}_id"] == "")
    ].sort_values(["education_id", "person_id"], ascending=[False, True])
    if children.empty:
        raise InvalidRequest("no child is known to immigration: no target for the game")
    person = children.iloc[0]
    wins, linked_probes, ones = 0, 0, 0
    changed: set[str] = set()
    with DataFiles(fed, (PROBER,)) as files:
        base = files.original(PROBER)
        relink(fed)
        first = _public_view(fed, PROBER)
        relink(fed)
        before = _public_view(fed, PROBER)
        # What differs between two epochs of the same files (ids, times, salts)
        # says nothing; nor does the prober's own size and commitment.
        volatile = {k for k in first.keys() | before.keys() if first.get(k) != before.get(k)}
        for _ in range(trials):
            bit = secret_bit()
            probe = _probe(base, person) if bit else fabricated(base, 1, PROBER, (2006, 2020))
            files.write(PROBER, pd.concat([base, probe]))
            epoch = relink(fed)
            now = _public_view(fed, PROBER)
            differ = {
                k
                for k in now.keys() | before.keys()
                if k not in volatile and PROBER not in k and now.get(k) != before.get(k)
            }
            changed |= differ
            wins += (1 if differ else 0) == bit
            if bit:
                ones += 1
                # Evaluation only: did the linkage really join the probe to the child?
                pairs = fed.linked_record_ids(epoch, PROBER, "immigration")
                linked_probes += ("PROBE-1", person["immigration_id"]) in pairs
    return game_result(
        fed,
        "game-probe-linkage",
        f"party node ({PROBER}): own file, own audit replica, the register",
        "a child known to immigration; its probe is that child's identity or a made-up one",
        trials,
        wins,
        f"the probe was linked to the child's immigration record in {linked_probes} of "
        f"{ones} trials; fields that moved with the probe: {sorted(changed)[:5] or 'none'}",
    )


# -- a pupil inside or outside a filter ----------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Oracle:
    education_id: str
    local_authority: str
    years: tuple[str, ...]
    fsm: str  # the target passes the filter with this value
    others: int  # pupils other than the target passing it


def _oracle_target(fed: LocalFederation) -> _Oracle:
    """A pupil, and filters (local authority, year groups, free school meals)
    that select exactly threshold - 1 other pupils, the target included or not
    by its own free-school-meals value; the nearest smaller number if none."""
    want = fed.config.output.suppress_below - 1
    edu = read_csv(fed.config.party("education").data).sort_values("record_id")
    best: _Oracle | None = None
    for (la, fsm), group in edu.groupby(["local_authority", "fsm"]):
        per_year = group.groupby("year_group").size().to_dict()
        for target in edu[edu["local_authority"] == la].itertuples():
            year = str(target.year_group)
            own = per_year.get(year, 0) - (1 if target.fsm == fsm else 0)
            reach: dict[int, tuple[str, ...]] = {own: (year,)}
            for y, n in per_year.items():
                if y == year:
                    continue
                for total, ys in list(reach.items()):
                    reach.setdefault(total + n, (*ys, str(y)))
            total = max(t for t in reach if t <= want) if min(reach) <= want else min(reach)
            found = _Oracle(str(target.record_id), str(la), reach[total], str(fsm), total)
            if best is None or abs(found.others - want) < abs(best.others - want):
                best = found
            if found.others == want:
                return found
    if best is None:
        raise InvalidRequest("education has no pupils: no target for the game")
    return best


def refusal_oracle(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """An analyst filters to a population of threshold - 1 pupils plus, if its
    free-school-meals value is the filter's, the target, and asks until refused.
    A refusal for anything but the budget it reads as an exact minimum-population
    rule would have meant it (the smaller population); otherwise it weighs the
    released cells. The distinct refusal texts are reported."""
    check_trials(trials)
    target = _oracle_target(fed)
    filters = (
        Predicate("local_authority", (target.local_authority,)),
        Predicate("year_group", target.years),
        Predicate("fsm", (target.fsm,)),
    )
    groupings = (("immigration", "immigration_status"), ("justice", "sentence"))
    specs = [
        QuerySpec(PURPOSE, "education", p, a, population_filters=filters, project_id=ATTACK_PROJECT)
        for p, a in groupings
    ]
    edu = read_csv(fed.config.party("education").data)
    inside = edu[
        (edu["local_authority"] == target.local_authority)
        & edu["year_group"].isin(target.years)
        & (edu["fsm"] == target.fsm)
        & (edu["record_id"] != target.education_id)
    ]
    ids = [*inside["record_id"], target.education_id]
    expected = []
    for party, attribute in groupings:
        groups = person_groups(fed, "education", ids, party, attribute)
        own = groups.pop(target.education_id)
        others = sum(1 for g in groups.values() if g == own)
        expected.append({own: (others + 1, others)})
    flip = "N" if target.fsm == "Y" else "Y"
    policy, wins, refusals = sdc_policy(fed), 0, 0
    texts: set[str] = set()
    with DataFiles(fed, ("education",)) as files:
        original = files.original("education")
        for _ in range(trials):
            bit = secret_bit()
            frame = original.copy()
            frame.loc[frame["record_id"] == target.education_id, "fsm"] = (
                target.fsm if bit else flip
            )
            files.write("education", frame)
            relink(fed)
            new_period(fed)
            outcomes = spend_period(fed, specs, refusals=True)
            refused = [o.refusal for o in outcomes if o.refusal and not o.budget]
            refusals += len(refused)
            texts |= {o.refusal for o in outcomes if o.refusal}
            if refused:
                # An exact minimum-population rule would refuse the smaller one.
                wins += bit == 0
                continue
            sightings = [
                s
                for o in outcomes
                if o.release is not None
                for s in released_sightings(o.cells(), expected[o.spec])
            ]
            scale = next((o.release.noise_scale for o in outcomes if o.release), 1.0)
            wins += decide(log_likelihood_ratio(sightings, scale, 2, 0, policy)) == bit
    return game_result(
        fed,
        "game-refusal-oracle",
        "analyst",
        f"{target.others} other pupils pass filters on local authority, year groups and "
        f"free school meals; the target's own value puts it in or out",
        trials,
        wins,
        f"{refusals} refusals other than for the budget; {len(texts)} distinct refusal "
        f"text(s): {sorted(texts)[:3]}",
    )


# -- an adult's custody record and the children of the household -----------------------
def _fanout_target(fed: LocalFederation, cap: int) -> tuple[pd.Series, str, int, int]:
    """An adult held by justice, the local authority of the pupils in their
    household, how many pupils live there, and how many pupils of that local
    authority other adults in custody flag (at most ``cap`` per household; from
    the ground truth)."""
    people = truth(fed)
    justice = read_csv(fed.config.party(PROBER).data).set_index("record_id")
    edu = read_csv(fed.config.party("education").data).set_index("record_id")
    pupils = people[people["education_id"] != ""]
    la_of = edu["local_authority"].to_dict()
    pupils = pupils.assign(la=pupils["education_id"].map(la_of))
    adults = people[(people["age"] >= 18) & (people["justice_id"] != "")]
    custody = adults[
        [justice.at[j, "sentence"] == "custody" for j in adults["justice_id"]]
    ].set_index("person_id")
    best: tuple[tuple[int, int, str], pd.Series, str, int, int] | None = None
    for adult in adults.itertuples():
        home = pupils[pupils["household_id"] == adult.household_id]
        if home.empty:
            continue
        la = str(home["la"].iloc[0])
        held = custody.drop(index=str(adult.person_id), errors="ignore")["household_id"]
        flagged = pupils[(pupils["la"] == la) & pupils["household_id"].isin(held)]
        others = sum(min(int(n), cap) for n in flagged.groupby("household_id").size())
        key = (-len(home), others, str(adult.person_id))
        if best is None or key < best[0]:
            row = people[people["person_id"] == adult.person_id].iloc[0]
            best = (key, row, la, len(home), others)
    if best is None:
        raise InvalidRequest("no adult held by justice lives with a pupil: no target")
    return best[1], best[2], best[3], best[4]


def household_fanout(fed: LocalFederation, trials: int = DEFAULT_TRIALS) -> AttackResult:
    """An analyst counts pupils living with an adult in custody, by local
    authority, until refused; the target adult (whose household holds the most
    pupils) has a custody record in justice's file, or a stand-in has it."""
    check_trials(trials)
    cap = fed.config.privacy.household_cap
    adult, la, pupils, others = _fanout_target(fed, cap)
    spec = QuerySpec(
        PURPOSE,
        "education",
        "education",
        "local_authority",
        conditions=(Condition(PROBER, (Predicate("sentence", ("custody",)),), link="household"),),
        project_id=ATTACK_PROJECT,
    )
    expected = {la: (others + min(pupils, cap), others)}
    policy, wins = sdc_policy(fed), 0
    with DataFiles(fed, (PROBER,)) as files:
        original = files.original(PROBER)
        at = original.index[original["record_id"] == adult["justice_id"]][0]
        held = original.copy()
        held.loc[at, "sentence"] = "custody"
        for _ in range(trials):
            bit = secret_bit()
            frame = held.copy()
            if not bit:
                stand_in = fabricated(held.loc[[at]], 1, PROBER, (1960, 2000))
                frame.loc[at] = stand_in.iloc[0]
            files.write(PROBER, frame)
            relink(fed)
            new_period(fed)
            outcomes = spend_period(fed, [spec])
            sightings = [
                s
                for o in outcomes
                if o.release is not None
                for s in released_sightings(o.cells(), expected)
            ]
            scale = next((o.release.noise_scale for o in outcomes if o.release), 1.0)
            wins += decide(log_likelihood_ratio(sightings, scale, 2, 0, policy)) == bit
    return game_result(
        fed,
        "game-household-fanout",
        "analyst",
        f"an adult whose household holds {pupils} pupil(s) in {la} (where other adults in "
        f"custody flag {others}); their custody record or a stand-in's",
        trials,
        wins,
        f"household cap {cap}",
    )
