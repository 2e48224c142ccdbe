"""Pattern-mining attack on stored CLKs (after Christen et al., "Precise and
fast cryptanalysis for Bloom filter based privacy-preserving record linkage").

The coordinator holds one department's CLKs, the public schema and a
public-like list of first names and surnames with their counts; never the
linkage secret. A record that contains a q-gram has every bit that q-gram's
hashes set, so in unhardened filters each frequent q-gram leaves a *closed
pattern*: a set of about ``hashes`` bit positions that are all set in every
filter of a record with the q-gram, and jointly set almost nowhere else. The
attack works from the filters alone:

1. *Mining*: the pair of columns that co-occur furthest above independence
   seeds a pattern; it grows, one column at a time, by the column most often
   set among the records that have the whole pattern so far (relative to how
   often it is set overall, so columns every record sets do not win), until
   chance co-occurrence is negligible. The pattern is then closed: its records
   are those with (nearly) all its bits set, its bits those set in (nearly) all
   its records and clearly less often elsewhere, repeated to a fixpoint. The
   pattern's size names the field (``hashes`` per field is public).
2. *Naming*: a field's patterns, most frequent first, are matched one to one
   with the q-grams of the name list by frequency, then re-matched on their
   co-occurrence profile: how often each other pattern occurs with it, against
   how often the q-grams they are currently matched to occur together in the
   list. The co-occurrences carry what the flat frequencies of a synthetic
   name list do not ("_j" goes with "ja", "a_" with "na").
3. *Re-identification*: each record's name is the listed name whose named
   q-grams best agree with the patterns the record has and lacks (all of a
   pattern's bits set or not), ties going to the more frequent name.

The attack is scored (`score_patterns`) with the secret, which the attacker
never has: a pattern counts as correct when its bits are the true positions
of the q-gram it was named (Dice >= `POSITION_DICE`), and a record as
re-identified when both its first name and surname are recovered.
XOR-folding defeats step 1: a folded bit is set for a record with the q-gram
only when the bit folded onto it is unset, so no set of bits is set in all of
a q-gram's records.
"""

from __future__ import annotations

import hmac
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from headcount.attacks.clk_data import NO_PERSON, EncodedTarget, load_identities
from headcount.attacks.clk_frequency import NameFrequencies
from headcount.linkage.bloom import token_positions
from headcount.linkage.clk import balance_permutation, field_keys
from headcount.linkage.clk_schema import SALT_SOURCES, ClkSchema
from headcount.linkage.normalise import normalise_name
from headcount.local import LocalFederation

if TYPE_CHECKING:
    from headcount.attacks import AttackResult

__all__ = [
    "NAME_FIELDS",
    "POSITION_DICE",
    "Pattern",
    "PatternResult",
    "PatternScore",
    "mine_patterns",
    "pattern_attack",
    "pattern_mining",
    "qgrams",
    "score_patterns",
    "true_positions",
]

log = logging.getLogger(__name__)

NAME_FIELDS = ("first_name", "last_name")
POSITION_DICE = 0.9  # a pattern is a q-gram's positions when their Dice is at least this

_MIN_SUPPORT = 0.005  # patterns in fewer records than this share are not mined
_MIN_SUPPORT_RECORDS = 8
_MIN_SEED_SIGMAS = 5.0  # a seed pair must co-occur this many sd above independence
_GROW_STEPS = 8  # after this many columns chance co-occurrence is ~0.4**8 of records
_CLOSED_SHARE = 0.9  # a record has a pattern when this share of its bits is set ...
_OUTSIDE_SHARE = 0.8  # ... and a bit belongs to it unless set this often without it
_CLOSE_ROUNDS = 4
_MAX_PATTERNS = 400
_SIZE_SLACK = 0.3  # a pattern's size must be within 30% of its field's hashes
_NAMING_ROUNDS = 12
_CANDIDATE_GRAMS = 3  # q-grams considered per pattern: this many times the patterns
_FREQUENCY_WEIGHT = 0.25  # of the log frequency ratio, beside the co-occurrence profiles
_SEED_SIZES = (2, 3, 4, 6, 8, 12)  # most frequent patterns named by frequency to seed from
_SEED_PERMUTED = 3
_GROW_SHARE = 0.1  # share of the unnamed patterns named per growing round


@dataclass(frozen=True, slots=True)
class Pattern:
    """A closed set of bit positions and the field its size points to."""

    field: str
    columns: np.ndarray  # sorted bit positions (int64)
    support: int  # records having (nearly) all of them


@dataclass(frozen=True, slots=True)
class PatternResult:
    """Outcome of one run.

    Attributes:
        patterns: every mined pattern, most frequent first.
        named: for each name field, (q-gram, pattern index) pairs the attacker
            settled on.
        guessed: for each name field, the name guessed per record ("" for none).
    """

    patterns: tuple[Pattern, ...]
    named: dict[str, tuple[tuple[str, int], ...]]
    guessed: dict[str, tuple[str, ...]]


def qgrams(name: str, q: int) -> frozenset[str]:
    """The q-grams a CLK encodes for a name (spaces dropped, ``_``-padded), as
    `headcount.linkage.clk` tokenises name fields."""
    if not name:
        return frozenset()
    padded = "_" + name.replace(" ", "") + "_"
    if len(padded) < q:
        return frozenset((padded,))
    return frozenset(padded[i : i + q] for i in range(len(padded) - q + 1))


def _has(bits: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Records with at least `_CLOSED_SHARE` of ``columns`` set."""
    return np.asarray(bits[:, columns].mean(axis=1) >= _CLOSED_SHARE)


def _close(bits: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iterate records <-> bits of a pattern to a fixpoint (its closure)."""
    columns = np.zeros(0, dtype=np.int64)
    for _ in range(_CLOSE_ROUNDS):
        if rows.sum() < _MIN_SUPPORT_RECORDS:
            break
        inside = bits[rows].mean(axis=0)
        outside = bits[~rows].mean(axis=0) if (~rows).any() else np.zeros(bits.shape[1])
        new = np.flatnonzero((inside >= _CLOSED_SHARE) & (outside < _OUTSIDE_SHARE))
        if len(new) < 2:
            break
        new_rows = _has(bits, new)
        if np.array_equal(new, columns) and np.array_equal(new_rows, rows):
            break
        columns, rows = new, new_rows
    return columns, rows


def _field_of(size: int, schema: ClkSchema) -> str:
    spec = min(schema.fields, key=lambda f: abs(f.hashes - size))
    return spec.name if abs(spec.hashes - size) <= _SIZE_SLACK * spec.hashes else ""


def mine_patterns(bits: np.ndarray, schema: ClkSchema) -> list[Pattern]:
    """Closed bit patterns of a (records, bits) 0/1 float32 matrix, most
    frequent first. Patterns whose size fits no field get field ``""``."""
    n, m = bits.shape
    min_support = max(_MIN_SUPPORT_RECORDS, _MIN_SUPPORT * n)
    freq = bits.mean(axis=0)
    expected = np.outer(freq, freq) * n
    # Standardised excess of each pair's co-occurrence over independence.
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.nan_to_num((bits.T @ bits - expected) / np.sqrt(expected), nan=0.0)
    excess[np.tril_indices(m)] = 0.0
    patterns: list[Pattern] = []
    found: list[np.ndarray] = []
    while len(patterns) < _MAX_PATTERNS:
        seed = int(np.argmax(excess))
        first, second = divmod(seed, m)
        if excess[first, second] < _MIN_SEED_SIGMAS:
            break
        excess[first, second] = 0.0
        members = [first, second]
        rows = (bits[:, first] > 0) & (bits[:, second] > 0)
        for _ in range(_GROW_STEPS):
            lift = bits[rows].mean(axis=0) - freq
            lift[members] = -np.inf
            best = int(np.argmax(lift))
            grown = rows & (bits[:, best] > 0)
            if grown.sum() < min_support:
                break
            members.append(best)
            rows = grown
        columns, rows = _close(bits, rows)
        if len(columns) < 2 or rows.sum() < min_support:
            continue
        excess[np.ix_(columns, columns)] = 0.0
        if any(_dice(columns, other) >= 0.5 for other in found):
            continue  # the same pattern again, from another seed
        found.append(columns)
        patterns.append(Pattern(_field_of(len(columns), schema), columns, int(rows.sum())))
    patterns.sort(key=lambda p: -p.support)
    log.debug("pattern mining: %d closed patterns", len(patterns))
    return patterns


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * len(np.intersect1d(a, b)) / max(1, len(a) + len(b))


def _list_table(
    names: dict[str, int], q: int
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Listed names (most frequent first), their counts, the list's q-grams
    (most common first) and the (names, q-grams) bool incidence."""
    listed = sorted(names, key=lambda v: (-names[v], v))
    people: Counter[str] = Counter()
    for v in listed:
        for g in qgrams(v, q):
            people[g] += names[v]
    grams = sorted(people, key=lambda g: (-people[g], g))
    column = {g: j for j, g in enumerate(grams)}
    incidence = np.zeros((len(listed), len(grams)), dtype=bool)
    for i, v in enumerate(listed):
        incidence[i, [column[g] for g in qgrams(v, q)]] = True
    counts = np.array([names[v] for v in listed], dtype=np.float64)
    return listed, counts, grams, incidence


def _greedy(cost: np.ndarray) -> np.ndarray:
    """One-to-one assignment of rows to columns, cheapest pairs first; -1 for none."""
    assigned = np.full(cost.shape[0], -1, dtype=np.int64)
    taken = np.zeros(cost.shape[1], dtype=bool)
    for flat in np.argsort(cost, axis=None, kind="stable").tolist():
        row, col = divmod(flat, cost.shape[1])
        if assigned[row] < 0 and not taken[col]:
            assigned[row], taken[col] = col, True
            if (assigned >= 0).all():
                break
    return assigned


class _Profiles:
    """Shares and co-occurrences of patterns (in records) and of q-grams (in
    the weighted name list), and the cost of naming patterns after q-grams
    given a set of anchors (patterns already named)."""

    def __init__(self, have: np.ndarray, gram_rows: np.ndarray, weights: np.ndarray) -> None:
        total = weights.sum()
        self.share_p = have.mean(axis=0)
        self.share_g = (weights @ gram_rows) / total
        self.co_p = (have.T.astype(np.float64) @ have) / len(have)
        self.co_g = (gram_rows.T * weights) @ gram_rows / total
        self.log_freq = np.abs(
            np.log(self.share_p[:, None] + 1e-6) - np.log(self.share_g[None, :] + 1e-6)
        )

    def cost(
        self, assigned: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        """(patterns, q-grams) cost, restricted to ``rows`` and ``cols`` when
        given: how far P(anchor | pattern) and P(pattern | anchor) over the
        anchors are from the same for the q-gram and the anchors' q-grams,
        plus a frequency term."""
        rows = np.arange(len(self.share_p)) if rows is None else rows
        cols = np.arange(len(self.share_g)) if cols is None else cols
        log_freq = self.log_freq[np.ix_(rows, cols)]
        anchors = np.flatnonzero(assigned >= 0)
        if not len(anchors):
            return np.asarray(log_freq)
        mapped = assigned[anchors]
        co_p, co_g = self.co_p[np.ix_(rows, anchors)], self.co_g[np.ix_(cols, mapped)]
        cond_p = co_p / np.maximum(self.share_p[rows][:, None], 1e-9)
        back_p = co_p / np.maximum(self.share_p[anchors][None, :], 1e-9)
        cond_g = co_g / np.maximum(self.share_g[cols][:, None], 1e-9)
        back_g = co_g / np.maximum(self.share_g[mapped][None, :], 1e-9)
        profile_p = np.concatenate([cond_p, back_p], axis=1).astype(np.float32)
        profile_g = np.concatenate([cond_g, back_g], axis=1).astype(np.float32)
        distance = np.abs(profile_p[:, None, :] - profile_g[None, :, :]).sum(axis=2)
        cost: np.ndarray = distance / len(anchors) + _FREQUENCY_WEIGHT * log_freq
        return cost


def _grow(profiles: _Profiles, seeds: np.ndarray) -> np.ndarray:
    """Extend a partial naming: each round names the unnamed patterns whose
    best q-gram stands furthest above their second best, given the anchors."""
    assigned = seeds.copy()
    while True:
        open_rows = np.flatnonzero(assigned < 0)
        free = np.setdiff1d(np.arange(profiles.co_g.shape[0]), assigned[assigned >= 0])
        if not len(open_rows) or len(free) < 2:
            return assigned
        cost = profiles.cost(assigned, open_rows, free)
        ordered = np.sort(cost, axis=1)
        margin = ordered[:, 1] - ordered[:, 0]
        batch = max(1, int(_GROW_SHARE * len(open_rows)))
        taken: set[int] = set()
        for k in np.argsort(-margin, kind="stable")[:batch].tolist():
            col = int(free[np.argmin(cost[k])])
            if col not in taken:
                assigned[open_rows[k]] = col
                taken.add(col)


def _name_patterns(have: np.ndarray, gram_rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Match patterns (columns of ``have``, records x patterns) to q-grams
    (columns of ``gram_rows``, listed names x q-grams, weighted by ``weights``).

    Co-occurrences identify q-grams well once some anchors are right, so
    several seeds are tried (the most frequent patterns named by frequency
    alone), each grown to a full naming and refined; the naming whose pairs
    are most self-consistent wins. Returns each pattern's q-gram column, -1
    for none.
    """
    profiles = _Profiles(have, gram_rows, weights)
    by_frequency = _greedy(profiles.log_freq)
    order = np.argsort(-profiles.share_p, kind="stable")
    best, best_cost = by_frequency, np.inf
    hypotheses: list[np.ndarray] = []
    for size in _SEED_SIZES:
        seeds = np.full(len(by_frequency), -1, dtype=np.int64)
        seeds[order[:size]] = by_frequency[order[:size]]
        hypotheses.append(seeds)
    # Frequencies alone may swap the commonest q-grams: also seed the three
    # most frequent patterns with each arrangement of their nearest q-grams.
    top = order[:_SEED_PERMUTED]
    near = np.argsort(profiles.log_freq[top].min(axis=0), kind="stable")[: _SEED_PERMUTED + 1]
    for grams in itertools.permutations(near.tolist(), len(top)):
        seeds = np.full(len(by_frequency), -1, dtype=np.int64)
        seeds[top] = grams
        hypotheses.append(seeds)
    for seeds in hypotheses:
        assigned = _grow(profiles, seeds)
        for _ in range(_NAMING_ROUNDS):
            updated = _greedy(profiles.cost(assigned))
            if np.array_equal(updated, assigned):
                break
            assigned = updated
        named = np.flatnonzero(assigned >= 0)
        total = (
            float(profiles.cost(assigned)[named, assigned[named]].mean()) if len(named) else np.inf
        )
        if total < best_cost:
            best, best_cost = assigned, total
    return best


def pattern_attack(clks: np.ndarray, schema: ClkSchema, public: NameFrequencies) -> PatternResult:
    """Mine closed bit patterns of ``clks``, name those of the name fields after
    q-grams of ``public``, and guess each record's first name and surname."""
    bits = np.unpackbits(clks, axis=1).astype(np.float32)
    patterns = mine_patterns(bits, schema)
    named: dict[str, tuple[tuple[str, int], ...]] = {}
    guessed: dict[str, tuple[str, ...]] = {}
    for spec in schema.fields:
        if spec.name not in NAME_FIELDS:
            continue
        names = public.first if spec.name == "first_name" else public.last
        mine = [i for i, p in enumerate(patterns) if p.field == spec.name]
        if not mine or not names:
            named[spec.name], guessed[spec.name] = (), ("",) * len(clks)
            continue
        listed, counts, grams, incidence = _list_table(names, spec.ngram)
        candidates = grams[: _CANDIDATE_GRAMS * len(mine)]
        incidence = incidence[:, : len(candidates)]
        have = np.column_stack([_has(bits, patterns[i].columns) for i in mine])
        assigned = _name_patterns(have, incidence.astype(np.float64), counts)
        keep = np.flatnonzero(assigned >= 0)
        named[spec.name] = tuple((candidates[assigned[k]], mine[k]) for k in keep.tolist())
        # Disagreements between the record's patterns and each name's named
        # q-grams; log-frequency breaks ties towards common names.
        rec = have[:, keep].astype(np.float32)
        lst = incidence[:, assigned[keep]].astype(np.float32)
        mismatch = rec @ (1.0 - lst).T + (1.0 - rec) @ lst.T
        score = -mismatch + 1e-3 * np.log(counts)[None, :]
        guessed[spec.name] = tuple(listed[i] for i in score.argmax(axis=1).tolist())
    log.debug("pattern mining: %s q-grams named", {f: len(v) for f, v in named.items()})
    return PatternResult(tuple(patterns), named, guessed)


def true_positions(
    secret: bytes, schema: ClkSchema, field: str, gram: str, salts: Sequence[str] = ("",)
) -> list[np.ndarray]:
    """Scoring only (needs the secret): the CLK bit positions a name-field
    q-gram sets, after folding and balancing, one array per salt value in
    ``salts`` (only the first is used when the field is not salted).

    Balanced CLKs also carry the complement, where the q-gram *clears* bits;
    only the positions it sets are returned.
    """
    spec = next(f for f in schema.fields if f.name == field)
    key = field_keys(secret, schema)[field]
    salted = field in schema.salted_fields
    out_bits = schema.filter_bits // 2 if schema.xor_fold else schema.filter_bits
    permutation = balance_permutation(secret, 2 * out_bits) if schema.balance else None
    found: list[np.ndarray] = []
    for salt in salts if salted else salts[:1]:
        keyed = hmac.digest(key, b"salt\x00" + salt.encode("utf-8"), "sha256") if salted else key
        positions = np.unique(
            token_positions([(keyed, "g:" + gram)], spec.hashes, schema.filter_bits)
        )
        if schema.xor_fold:
            positions = np.unique(positions % out_bits)
        if permutation is not None:
            positions = np.flatnonzero(np.isin(permutation, positions))
        found.append(positions.astype(np.int64))
    return found


@dataclass(frozen=True, slots=True)
class PatternScore:
    patterns: int  # closed patterns mined, any field
    named: int  # name-field patterns the attacker named after a q-gram
    named_correct: int  # ... whose bits are that q-gram's true positions
    decoded: int  # ... whose bits are the true positions of some q-gram of the field
    frequent_grams: int  # q-grams in >= 0.5% of the target's records, both name fields
    frequent_found: int  # ... whose positions a correctly named pattern gives
    first_correct: int  # real records whose first name was recovered
    last_correct: int  # ... surname
    both_correct: int  # ... both (the record re-identified)
    listed: int  # real records whose first name and surname are both in the list
    records: int  # real records
    baseline: int  # both right by always guessing each list's commonest name

    @property
    def position_rate(self) -> float:
        """Share of named q-grams whose positions the attacker got right."""
        return self.named_correct / max(1, self.named)

    @property
    def rate(self) -> float:
        """Share of real records re-identified (first name and surname)."""
        return self.both_correct / max(1, self.records)


def score_patterns(
    target: EncodedTarget,
    truth: pd.DataFrame,
    result: PatternResult,
    public: NameFrequencies,
    secret: bytes,
) -> PatternScore:
    """Compare a run with the ground truth, using the secret for the true
    positions (salted fields: a pattern is right if it matches the q-gram's
    positions under any salt value of the target's records)."""
    real = np.flatnonzero(target.person != NO_PERSON)
    rows = truth.iloc[target.person[real]]
    schema = target.schema
    salts: list[str] = [""]
    if schema.salt_source:
        salt_of = SALT_SOURCES[schema.salt_source]
        salts = sorted({salt_of(i) for i in load_identities(rows)})
    named = named_correct = decoded = frequent = frequent_found = 0
    correct: dict[str, np.ndarray] = {}
    for spec in schema.fields:
        if spec.name not in NAME_FIELDS:
            continue
        true = [normalise_name(v) for v in rows[spec.name]]
        guesses = result.guessed.get(spec.name, ("",) * len(target.clks))
        correct[spec.name] = np.array(
            [t == guesses[i] for t, i in zip(true, real.tolist(), strict=True)], dtype=bool
        )
        people: Counter[str] = Counter(g for t in true for g in qgrams(t, spec.ngram))
        positions = {g: true_positions(secret, schema, spec.name, g, salts) for g in people}
        right: set[str] = set()
        for gram, k in result.named.get(spec.name, ()):
            columns = result.patterns[k].columns
            named += 1
            if (
                gram in positions
                and max(_dice(columns, p) for p in positions[gram]) >= POSITION_DICE
            ):
                named_correct += 1
                right.add(gram)
            decoded += any(
                _dice(columns, p) >= POSITION_DICE for ps in positions.values() for p in ps
            )
        common = {g for g, c in people.items() if c >= _MIN_SUPPORT * len(real)}
        frequent += len(common)
        frequent_found += len(common & right)
    first, last = correct.get("first_name"), correct.get("last_name")
    both = first & last if first is not None and last is not None else np.zeros(len(real), bool)

    def top(names: dict[str, int]) -> str:
        return max(names, key=lambda v: (names[v], v)) if names else ""

    true_first = [normalise_name(v) for v in rows.first_name]
    true_last = [normalise_name(v) for v in rows.last_name]
    return PatternScore(
        patterns=len(result.patterns),
        named=named,
        named_correct=named_correct,
        decoded=decoded,
        frequent_grams=frequent,
        frequent_found=frequent_found,
        first_correct=int(first.sum()) if first is not None else 0,
        last_correct=int(last.sum()) if last is not None else 0,
        both_correct=int(both.sum()),
        listed=sum(
            f in public.first and s in public.last
            for f, s in zip(true_first, true_last, strict=True)
        ),
        records=len(real),
        baseline=sum(
            f == top(public.first) and s == top(public.last)
            for f, s in zip(true_first, true_last, strict=True)
        ),
    )


def _epoch_key(fed: LocalFederation, party: str = "health") -> bytes:
    """Scoring only: the key health encoded the coordinator's latest epoch
    under (the attacker never reads it)."""
    from headcount.crypto import ceremony

    epoch_id = fed.coordinator.coordinator.store.latest_epoch()
    store = fed.nodes[party].node.store
    secret = store.ceremony(store.epoch(epoch_id).ceremony_id)[2]
    if secret is None:
        raise ValueError(f"{party} holds no finished ceremony for epoch {epoch_id}")
    return ceremony.epoch_key(secret, epoch_id)


def pattern_mining(fed: LocalFederation) -> AttackResult:
    """Attack-suite entry: the coordinator mines closed bit patterns of
    health's stored CLKs, names them after the q-grams of a public-like name
    list (the names of another synthetic population of the same size) and
    reconstructs each record's first name and surname."""
    import tempfile
    from pathlib import Path

    from headcount.attacks import AttackResult
    from headcount.attacks.clk_data import from_federation, read_truth
    from headcount.attacks.clk_frequency import name_frequencies
    from headcount.synth import generate_population

    target = from_federation(fed)
    truth = read_truth(fed.ground_truth)
    with tempfile.TemporaryDirectory() as tmp:
        generate_population(len(truth), 1_000_003, Path(tmp))
        public = name_frequencies(read_truth(Path(tmp) / "ground_truth.csv"))
    result = pattern_attack(target.clks, target.schema, public)
    score = score_patterns(target, truth, result, public, _epoch_key(fed))
    return AttackResult(
        "clk-pattern-mining",
        "coordinator",
        f"health's {len(target.clks)} stored CLKs; first-name and surname frequencies of"
        f" {len(truth)} other people; the public schema",
        f"{score.patterns} closed bit patterns; {score.named_correct} of {score.named}"
        f" q-grams named with their true positions; first name and surname recovered for"
        f" {score.both_correct} of {score.records} records (first {score.first_correct},"
        f" surname {score.last_correct}; both in the list: {score.listed}; always guessing"
        f" the commonest names: {score.baseline})",
        score.rate,
        attempts=max(1, score.records),
        accepted=0.01,
    )
