"""Privacy games: each privacy channel turned into a measured lower bound on epsilon.

A game plays many trials against a live local federation. In each trial a
secret bit is drawn (``secrets``, uniform): it decides one fact about one
person in one department's data (the target is known to immigration or not,
their status is A or B, an adult's custody record is in justice's file or a
stand-in's is). The federation is relinked so the nodes serve the changed
file, the adversary acts only through what its role really receives, and
then guesses the bit. Roles and their views:

* an analyst: the client's ``Release`` tables, refusals' exception texts;
* a department: its own node's view, including what its node decrypts (the
  origin's noisy counts before disclosure control, taken from the node's own
  call to ``protect_release``) and its own audit replica;
* the coordinator: its own store and its own noise shares (taken from its own
  calls to ``draw_share``);
* the public: the audit log and the register (``load_register``).

Any ``epsilon``-DP view caps the success rate of any guess at
e^eps / (1 + e^eps) (``headcount.privacy.noise.guessing_bound``), so the
Clopper-Pearson 95% lower bound on the success rate gives a 95% lower bound on
the epsilon the channel really has (``epsilon_lower_bound``). It is compared
with what the federation publishes for the target's department: its budget per
period. A motivated adversary spends that whole budget on its target in every
trial (asking until refused), so each trial is one period's worth of budget:
between trials every node's ``privacy_charges`` rows are deleted and the
coordinator's stored queries are marked refused, which simulates the start of
a new period (``new_period``). Nothing else is reset.

Wherever it can, an adversary guesses by the likelihood ratio of what it saw
under the two values of the bit (``games_guess.log_likelihood_ratio``): it
knows the mechanism (the noise distribution, the part of the noise it drew
itself, the small-number rule) and, as differential privacy assumes, everyone
else's records (here from the federation's own linkage and files). For the
cells it reads, that is the most powerful test of a uniform bit. Any strategy,
good or bad, gives a valid lower bound; a weak one gives a low one.

The trials of one game share one federation and one target; they are
independent as far as the linkage is deterministic, and the bits and the noise
are fresh (both from the OS's CSPRNG).

Modules: this one holds the harness (periods, taps, asking until refused);
``games_data`` the files and the adversary's outside knowledge,
``games_guess`` the likelihood ratio, and ``games_status``, ``games_shares``
and ``games_linkage`` the games.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from headcount.attacks import AttackResult
from headcount.client import Release
from headcount.domain.query import QuerySpec
from headcount.errors import BudgetExhausted, HeadcountError, InvalidRequest
from headcount.local import LocalFederation
from headcount.privacy.bounds import epsilon_lower_bound
from headcount.privacy.noise import guessing_bound
from headcount.protect.sdc import TOTAL

PURPOSE = "Privacy game: measure what one party can learn about one person."

# Trials per game when none is asked for (the CLI, run_attacks): enough for a
# bound to mean something (at 40 trials a perfect guesser proves epsilon >= 2.3),
# few enough to finish in minutes. benchmarks/bench_privacy.py plays more.
DEFAULT_TRIALS = 40

# Most queries one trial may ask: far above any budget / query epsilon the
# configuration allows, so the loop ends on the budget, not here.
MAX_QUERIES_PER_TRIAL = 400


class Game(Protocol):
    def __call__(self, fed: LocalFederation, trials: int = ...) -> AttackResult: ...


def games() -> dict[str, Game]:
    """Every privacy game by its registered name."""
    from headcount.attacks import games_linkage, games_shares, games_status

    return {
        "game-probe-linkage": games_linkage.probe_linkage,
        "game-padded-origin": games_status.padded_origin,
        "game-differencing": games_status.differencing,
        "game-repetition": games_status.repetition,
        "game-refusal-oracle": games_linkage.refusal_oracle,
        "game-household-fanout": games_linkage.household_fanout,
        "game-coordinator-share": games_shares.coordinator_share,
        "game-node-share": games_shares.node_share,
    }


# -- the bit, the guess, the result -----------------------------------------------
def secret_bit() -> int:
    """A uniform secret bit from the OS's CSPRNG."""
    return secrets.randbits(1)


def decide(score: float) -> int:
    """1 for a positive score, 0 for a negative one, a fair coin on a tie."""
    if score > 0:
        return 1
    if score < 0:
        return 0
    return secret_bit()


def check_trials(trials: int) -> int:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InvalidRequest(f"trials must be an int >= 1, got {trials!r}")
    return trials


def claimed_epsilon(fed: LocalFederation) -> float:
    """What the federation publishes: each department's epsilon per period."""
    return fed.config.privacy.epsilon_per_period


def game_result(
    fed: LocalFederation,
    name: str,
    attacker: str,
    knows: str,
    trials: int,
    successes: int,
    detail: str,
) -> AttackResult:
    claimed = claimed_epsilon(fed)
    bound = epsilon_lower_bound(successes, trials)
    rate = successes / trials
    return AttackResult(
        name,
        attacker,
        knows,
        f"{successes} of {trials} secret bits guessed right ({rate:.0%}); epsilon >= "
        f"{bound:.2f} at 95% vs {claimed:g} published; {detail}",
        rate,
        attempts=trials,
        accepted=guessing_bound(claimed),
        trials=trials,
        successes=successes,
        epsilon_bound=bound,
        epsilon_claimed=claimed,
    )


# -- periods, epochs and files ----------------------------------------------------
def new_period(fed: LocalFederation) -> None:
    """Simulate the start of a new privacy period for every department.

    Deletes every row of each node's ``privacy_charges`` table (its
    ``PeriodLedger``) and marks every query in the coordinator's store refused,
    which its mirror of the ledgers does not count. For games only: each trial
    is one period's worth of budget.
    """
    for party in fed.config.party_names:
        with closing(sqlite3.connect(fed.config.party(party).database, timeout=30)) as db, db:
            db.execute("DELETE FROM privacy_charges")
    path: Path = fed.coordinator.coordinator.store.path
    with closing(sqlite3.connect(path, timeout=30)) as db, db:
        db.execute("UPDATE queries SET status = 'refused' WHERE status != 'refused'")


def relink(fed: LocalFederation) -> str:
    """Run a linkage epoch, so that every node serves its file as it is now."""
    with fed.operator() as op:
        op.run_linkage()
    return fed.coordinator.coordinator.store.latest_epoch()


# -- what the adversary is given ---------------------------------------------------
@dataclass
class Taps:
    """Noise shares drawn and origin decryptions made while a game runs.

    ``draws`` holds (holder, share) for every call to ``draw_share``, holder
    being "coordinator" or the node that drew; ``decrypts`` the noisy counts
    (group -> count) of every table an origin node decrypted.
    """

    draws: list[tuple[str, list[int]]] = field(default_factory=list)
    decrypts: list[dict[str, int]] = field(default_factory=list)
    _holder: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self) -> tuple[int, int]:
        with self._lock:
            return len(self.draws), len(self.decrypts)


@contextmanager
def tapped(fed: LocalFederation) -> Iterator[Taps]:
    """Record what each party draws and decrypts, by wrapping the functions its
    own code calls (``draw_share`` in the coordinator and the nodes,
    ``protect_release`` in the nodes); restored on exit."""
    import coordinator.executor as coordinator_module
    import party_node.release as node_module

    taps = Taps()
    # The names each module's own code calls, looked up there (not imported
    # from headcount.privacy), so that only that party's calls are recorded.
    originals: list[tuple[Any, str, Any]] = [
        (module, name, getattr(module, name))
        for module, name in (
            (coordinator_module, "draw_share"),
            (node_module, "draw_share"),
            (node_module, "protect_release"),
        )
    ]
    coordinator_draw, node_draw, protect = (f for _, _, f in originals)

    def drawn_by(holder: Callable[[], str], draw: Callable[..., list[int]]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> list[int]:
            share = draw(*args, **kwargs)
            with taps._lock:
                taps.draws.append((holder(), list(share)))
            return share

        return wrapped

    def protected(packing: Any, groups: Any, policy: Any) -> Any:
        counts: dict[str, int] = {}
        for group, cells in groups:
            for category, cell in cells.items():
                counts[category if group == "all" and category else group] = int(cell.count)
        with taps._lock:
            taps.decrypts.append(counts)
        return protect(packing, groups, policy)

    def holding(name: str, add_noise: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            taps._holder.name = name
            try:
                return add_noise(*args, **kwargs)
            finally:
                taps._holder.name = ""

        return wrapped

    replacements = (
        drawn_by(lambda: "coordinator", coordinator_draw),
        drawn_by(lambda: str(getattr(taps._holder, "name", "")), node_draw),
        protected,
    )
    nodes = {p: running.node for p, running in fed.nodes.items()}
    for (module, name, _), replacement in zip(originals, replacements, strict=True):
        setattr(module, name, replacement)
    for p, node in nodes.items():
        node.add_noise = holding(p, node.add_noise)  # type: ignore[method-assign]
    try:
        yield taps
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
        for node in nodes.values():
            del node.add_noise  # back to the class's method


@dataclass(frozen=True, slots=True)
class Outcome:
    """One query of a trial: its release or its refusal, and what was tapped."""

    spec: int  # index into the specs asked
    release: Release | None
    refusal: str  # the exception text; "" when released
    budget: bool  # refused because a budget is spent
    shares: Mapping[str, list[list[int]]]  # holder -> one share per slot, per group
    decrypted: Mapping[str, int]  # the origin's noisy count per group

    def cells(self) -> dict[str, tuple[int | None, str]]:
        """The released table's cells (margins aside): group -> (count or None, status)."""
        if self.release is None:
            return {}
        t = self.release.table
        return {
            str(g): (None if pd.isna(c) else int(c), str(s))
            for g, c, s in zip(t["group"], t["count"], t["status"], strict=True)
            if str(g) != TOTAL
        }

    def known_noise(self, holders: Collection[str]) -> dict[str, int]:
        """The noise ``holders`` drew for each group, summed over them."""
        groups = list(self.cells())
        known = dict.fromkeys(groups, 0)
        for holder in holders:
            for slot, share in enumerate(self.shares.get(holder, [])):
                if slot > 0 or len(share) != len(groups):
                    raise InvalidRequest("games tap one-way count tables only")
                for g, z in zip(groups, share, strict=True):
                    known[g] += z
        return known


def spend_period(
    fed: LocalFederation,
    specs: Sequence[QuerySpec],
    *,
    taps: Taps | None = None,
    before: Callable[[], object] | None = None,
    refusals: bool = False,
) -> list[Outcome]:
    """Ask ``specs`` in turn, as the analyst, until a budget refuses.

    With ``refusals`` (a game that reads them), a spec refused for any other
    reason is recorded and not asked again, and the loop also ends when none
    is left; without, such a refusal means the game is broken and raises
    InvalidRequest. ``before`` runs before each query (e.g. a new epoch).
    """
    out: list[Outcome] = []
    active = list(range(len(specs)))
    with fed.analyst() as analyst:
        while active and len(out) < MAX_QUERIES_PER_TRIAL:
            for index in list(active):
                if before is not None:
                    before()
                mark = taps.mark() if taps is not None else (0, 0)
                release: Release | None = None
                refusal, budget = "", False
                try:
                    release = analyst.query(specs[index])
                except BudgetExhausted as exc:
                    refusal, budget = str(exc), True
                except HeadcountError as exc:
                    if not refusals:
                        raise InvalidRequest(f"the game's query was refused: {exc}") from exc
                    refusal = str(exc)
                    active.remove(index)
                shares: dict[str, list[list[int]]] = {}
                decrypted: dict[str, int] = {}
                if taps is not None:
                    with taps._lock:
                        for holder, share in taps.draws[mark[0] :]:
                            shares.setdefault(holder, []).append(share)
                        for counts in taps.decrypts[mark[1] :]:
                            decrypted.update(counts)
                out.append(Outcome(index, release, refusal, budget, shares, decrypted))
                if budget:
                    return out
    return out
