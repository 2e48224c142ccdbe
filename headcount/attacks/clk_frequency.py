"""Frequency attack on the bit patterns of stored CLKs (after Kuzu et al.).

The coordinator holds CLKs and a public-like list of first names with their
frequencies. Every bigram of a first name sets the same ``hashes`` bits (25 by
default) in every record that has it, so the bits of a frequent bigram are
set together, far more often than chance:

1. *Bit groups*: columns whose occurrence across records is strongly
   correlated are grouped; a group's size says which field set it (the
   schema's ``hashes`` per field is public), and a record "has" a group when
   most of its bits are set.
2. *Frequency alignment*: the first-name groups, sorted by how many records
   have them, are aligned with the first-name bigrams of the name list sorted
   by how many people have them.
3. *Names*: each record gets the listed name whose bigrams best agree with the
   aligned groups it has and lacks, ties going to the more frequent name.

Success is the share of records whose first name the attacker gets right,
beside the share it would get by always guessing the most frequent name.
Hardening that breaks the fixed bigram-to-bits mapping (salting), mixes bits
(folding) or adds noise (flips) blurs the groups.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from headcount.attacks.clk_data import NO_PERSON, EncodedTarget, bit_matrix
from headcount.linkage.clk_schema import ClkSchema
from headcount.linkage.normalise import normalise_name
from headcount.local import LocalFederation

if TYPE_CHECKING:
    from headcount.attacks import AttackResult

__all__ = [
    "FrequencyResult",
    "FrequencyScore",
    "NameFrequencies",
    "bigrams",
    "bit_groups",
    "frequency",
    "frequency_attack",
    "name_frequencies",
    "score_frequency",
]

log = logging.getLogger(__name__)

_MIN_CORRELATION = 0.2  # columns of one frequent bigram correlate far above this
_MIN_GROUP_FREQUENCY = 0.01  # groups rarer than this are noise
_SEED_PARTNERS = 5
_GROUP_F1 = 0.8
_MERGED = 1.2  # a group this much more frequent than the top bigram is a merger
_PRESENT_SHARE = 0.8  # a record has a group when this share of its bits is set


@dataclass(frozen=True, slots=True)
class NameFrequencies:
    """The attacker's public list: first names and surnames with counts."""

    first: dict[str, int]
    last: dict[str, int]


def name_frequencies(truth: pd.DataFrame) -> NameFrequencies:
    """Name counts of a population (a stand-in for a public name list)."""
    first = Counter(normalise_name(v) for v in truth.first_name)
    last = Counter(normalise_name(v) for v in truth.last_name)
    first.pop("", None)
    last.pop("", None)
    return NameFrequencies(dict(first), dict(last))


def bigrams(name: str) -> frozenset[str]:
    """The bigrams a CLK encodes for a name (spaces dropped, ``_``-padded)."""
    padded = "_" + name.replace(" ", "") + "_"
    return frozenset(padded[i : i + 2] for i in range(len(padded) - 1))


def bit_groups(bits: np.ndarray) -> list[np.ndarray]:
    """Groups of columns that are set together, most frequent first.

    Greedy: the most frequent column not yet grouped seeds a group of every
    free column correlated with it above `_MIN_CORRELATION`.
    """
    freq = bits.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.nan_to_num(np.corrcoef(bits.T), nan=0.0)
    np.fill_diagonal(corr, 0.0)
    # Seed with the columns most tightly bound to others: a column of one
    # frequent bigram correlates strongly with that bigram's other bits, while
    # a column many bigrams share is frequent but loosely bound to any.
    strength = np.sort(corr, axis=1)[:, -_SEED_PARTNERS:].mean(axis=1)
    free = np.ones(bits.shape[1], dtype=bool)
    groups: list[np.ndarray] = []
    for col in np.argsort(-strength, kind="stable"):
        if not free[col] or freq[col] < _MIN_GROUP_FREQUENCY:
            continue
        members = np.union1d(np.flatnonzero(free & (corr[col] >= _MIN_CORRELATION)), [col])
        free[members] = False
        if len(members) > 1:
            groups.append(members)
    return groups


def presence(bits: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(records, groups) bool: which records have most of each group's bits."""
    if not groups:
        return np.zeros((len(bits), 0), dtype=bool)
    return np.column_stack([bits[:, g].mean(axis=1) >= _PRESENT_SHARE for g in groups])


def field_of_group(size: int, schema: ClkSchema) -> str:
    """The field whose ``hashes`` is nearest a group's size."""
    return min(schema.fields, key=lambda f: abs(f.hashes - size)).name


@dataclass(frozen=True, slots=True)
class FrequencyResult:
    """The first name guessed for each stored CLK ("" when none) and the
    bigrams the attack aligned, in frequency order."""

    guessed: tuple[str, ...]
    aligned: tuple[str, ...]
    has: np.ndarray  # (records, aligned) bool: which records have each aligned group


def _name_table(
    names: dict[str, int], grams: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    listed = sorted(names, key=lambda n: (-names[n], n))
    has = np.array([[g in bigrams(n) for g in grams] for n in listed], dtype=bool)
    counts = np.array([names[n] for n in listed], dtype=np.float64)
    return listed, has.reshape(len(listed), len(grams)), counts


def _bigram_shares(names: dict[str, int]) -> list[tuple[str, float]]:
    """Each bigram with the share of listed people whose name has it, most common first."""
    people: Counter[str] = Counter()
    for name, count in names.items():
        for gram in bigrams(name):
            people[gram] += count
    total = max(1, sum(names.values()))
    return [(g, c / total) for g, c in sorted(people.items(), key=lambda kv: (-kv[1], kv[0]))]


def frequency_attack(
    clks: np.ndarray, schema: ClkSchema, public: NameFrequencies, *, field: str = "first_name"
) -> FrequencyResult:
    """Guess each CLK's first name (or surname, ``field="last_name"``) by
    aligning frequent bit groups with frequent bigrams of the name list."""
    bits = bit_matrix(clks)
    groups = [g for g in bit_groups(bits) if field_of_group(len(g), schema) == field]
    names = public.first if field == "first_name" else public.last
    ranking = _bigram_shares(names)
    have = presence(bits, groups)
    shares = have.mean(axis=0)
    # A group far more frequent than any bigram merged several; drop it.
    keep = shares <= _MERGED * (ranking[0][1] if ranking else 0.0)
    have, shares = have[:, keep], shares[keep]
    # Align each group, most frequent first, with the free bigram whose share
    # of people is nearest its share of records.
    grams: list[str] = []
    columns: list[int] = []
    free = dict(ranking[: 4 * max(1, len(shares))])
    for k in np.argsort(-shares, kind="stable").tolist():
        if not free:
            break
        gram = min(free, key=lambda g: (abs(free[g] - shares[k]), g))
        del free[gram]
        grams.append(gram)
        columns.append(k)
    have = have[:, columns]
    listed, name_has, counts = _name_table(names, grams)
    if not grams:
        return FrequencyResult(("",) * len(clks), (), np.zeros((len(clks), 0), dtype=bool))
    # Agreement of each record with each name over the aligned bigrams
    # (+1 for a bigram both have or both lack, -1 otherwise); log-frequency
    # breaks ties towards common names.
    signed_rec = np.where(have, 1.0, -1.0)
    signed_name = np.where(name_has, 1.0, -1.0)
    agreement = signed_rec @ signed_name.T + 1e-3 * np.log(counts)[None, :]
    guessed = tuple(listed[i] for i in agreement.argmax(axis=1))
    log.debug("frequency attack: %d %s groups aligned", len(grams), field)
    return FrequencyResult(guessed, tuple(grams), have)


@dataclass(frozen=True, slots=True)
class FrequencyScore:
    aligned: int  # bigram groups the attacker aligned
    aligned_correct: int  # ... whose records are those truly carrying that bigram
    groups_real: int  # ... whose records are those carrying some bigram (decoded, maybe misnamed)
    correct: int  # real records whose name was guessed right
    records: int  # real records
    baseline: int  # right by always guessing the list's most frequent name

    @property
    def rate(self) -> float:
        """Share of aligned bigrams the attacker got right."""
        return self.aligned_correct / max(1, self.aligned)

    @property
    def name_rate(self) -> float:
        return self.correct / max(1, self.records)


def score_frequency(
    target: EncodedTarget,
    truth: pd.DataFrame,
    result: FrequencyResult,
    public: NameFrequencies,
    *,
    field: str = "first_name",
) -> FrequencyScore:
    """Compare the attack's guesses with the true (error-free) names.

    An aligned group counts as right when the records having it and the
    records whose true name has its bigram agree (F1 >= `_GROUP_F1`).
    """
    real = np.flatnonzero(target.person != NO_PERSON)
    names = public.first if field == "first_name" else public.last
    top = max(names, key=lambda n: (names[n], n)) if names else ""
    true = [normalise_name(v) for v in truth[field].iloc[target.person[real]]]
    guessed = [result.guessed[i] for i in real]
    grams = sorted({g for t in true for g in bigrams(t)})
    carries = np.array([[g in bigrams(t) for g in grams] for t in true], dtype=bool)
    carries = carries.reshape(len(true), len(grams))
    aligned_correct = groups_real = 0
    for k, gram in enumerate(result.aligned):
        has = result.has[real, k]
        hits = (carries & has[:, None]).sum(axis=0)
        f1 = 2 * hits / np.maximum(1, carries.sum(axis=0) + has.sum())
        groups_real += bool(f1.max(initial=0.0) >= _GROUP_F1)
        aligned_correct += bool(gram in grams and f1[grams.index(gram)] >= _GROUP_F1)
    return FrequencyScore(
        aligned=len(result.aligned),
        aligned_correct=aligned_correct,
        groups_real=groups_real,
        correct=sum(t == g for t, g in zip(true, guessed, strict=True)),
        records=len(real),
        baseline=sum(t == top for t in true),
    )


def frequency(fed: LocalFederation) -> AttackResult:
    """Attack-suite entry: the coordinator aligns frequent bit groups of
    health's stored CLKs with the first-name bigrams of a public-like name list
    (the names of another synthetic population of the same size)."""
    import tempfile
    from pathlib import Path

    from headcount.attacks import AttackResult
    from headcount.attacks.clk_data import from_federation, read_truth
    from headcount.synth import generate_population

    target = from_federation(fed)
    truth = read_truth(fed.ground_truth)
    with tempfile.TemporaryDirectory() as tmp:
        generate_population(len(truth), 1_000_003, Path(tmp))
        public = name_frequencies(read_truth(Path(tmp) / "ground_truth.csv"))
    score = score_frequency(
        target, truth, frequency_attack(target.clks, target.schema, public), public
    )
    return AttackResult(
        "clk-frequency",
        "coordinator",
        f"health's {len(target.clks)} stored CLKs; first-name frequencies of"
        f" {len(truth)} other people; the public schema",
        f"{score.aligned_correct} of {score.aligned} bit groups aligned with the right"
        f" first-name bigram; first names guessed for {score.name_rate:.1%} of records"
        f" (always guessing the commonest name: {score.baseline / max(1, score.records):.1%})",
        score.rate,
        attempts=max(1, score.aligned),
        accepted=0.01,
    )
