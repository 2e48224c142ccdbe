"""What a curious coordinator holds when it attacks stored CLKs, and the truth
the attack suite scores it against.

An `EncodedTarget` is one department's stored encodings (as the coordinator
keeps them) with, for scoring only, the person behind each row. The attacker
never reads ``person``; the attacks take ``clks`` (and public facts: the
linkage schema, a name list or a plaintext population) and return guesses that
the caller scores. Two sources build targets: the live federation of the attack
suite (`from_federation`) and a synthetic population encoded offline under a
chosen schema (`from_population`, for benchmarks and tests of each hardening
level).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from headcount.linkage.clk import decoy_clks, encode_clks, fill_rates
from headcount.linkage.clk_schema import ClkSchema
from headcount.linkage.normalise import Identity, normalise_identity
from headcount.local import LocalFederation

__all__ = [
    "EncodedTarget",
    "Plaintext",
    "bit_matrix",
    "dice_matrix",
    "from_federation",
    "from_population",
    "load_identities",
    "plaintext_sample",
    "read_truth",
]

FIELDS = ("first_name", "last_name", "date_of_birth", "sex", "postcode")
TARGET_PARTY = "health"  # the largest department of the synthetic population
NO_PERSON = -1  # a decoy's person


@dataclass(frozen=True, slots=True)
class EncodedTarget:
    """One department's CLKs as stored at the coordinator.

    Attributes:
        clks: ``uint8`` array (records, clk bytes), the attacker's input.
        person: for scoring only, the ground-truth person index of each row
            (`NO_PERSON` for a decoy).
        schema: the CLK layout, which every party (coordinator included) reads.
    """

    clks: np.ndarray
    person: np.ndarray
    schema: ClkSchema

    def __post_init__(self) -> None:
        if self.clks.ndim != 2 or self.clks.dtype != np.uint8:
            raise ValueError("clks must be a 2-D uint8 array")
        if self.person.shape != (len(self.clks),):
            raise ValueError("person needs one entry per CLK")


@dataclass(frozen=True, slots=True)
class Plaintext:
    """Identities the attacker holds in the clear, with their ground-truth
    person indices (for scoring only)."""

    identities: tuple[Identity, ...]
    person: np.ndarray

    def __post_init__(self) -> None:
        if self.person.shape != (len(self.identities),):
            raise ValueError("person needs one entry per identity")


def bit_matrix(clks: np.ndarray) -> np.ndarray:
    """(rows, bits) float32 0/1 matrix of packed CLKs, bit 0 the MSB of byte 0."""
    return np.unpackbits(clks, axis=1).astype(np.float32)


def dice_matrix(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dense Dice coefficients (float32) between two (rows, bits) 0/1 matrices."""
    inter = left @ right.T
    sizes = left.sum(axis=1)[:, None] + right.sum(axis=1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(sizes > 0, 2.0 * inter / sizes, 0.0)
    return dice.astype(np.float32)


def read_truth(path: Path) -> pd.DataFrame:
    """A ground_truth.csv as strings."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def load_identities(frame: pd.DataFrame) -> list[Identity]:
    """Normalised identities of a department or ground-truth frame, in row order."""
    return [
        normalise_identity(*row)
        for row in zip(*(frame[c].astype(str) for c in FIELDS), strict=True)
    ]


def plaintext_sample(
    truth: pd.DataFrame, target: EncodedTarget, overlap: float, seed: int
) -> Plaintext:
    """The attacker's plaintext: true identities of ``overlap`` of the target's
    people plus as many others from the population as fit, so the attacker's
    list is about as long as the target and only partly overlaps it.

    Raises:
        ValueError: ``overlap`` is not in (0, 1].
    """
    if not 0.0 < overlap <= 1.0:
        raise ValueError("overlap must be in (0, 1]")
    rng = np.random.default_rng(seed)
    in_target = np.unique(target.person[target.person != NO_PERSON])
    known = rng.choice(in_target, size=round(overlap * len(in_target)), replace=False)
    others = np.setdiff1d(np.arange(len(truth)), in_target)
    extra = rng.choice(others, size=min(len(others), len(in_target) - len(known)), replace=False)
    chosen = rng.permutation(np.concatenate([known, extra]))
    return Plaintext(tuple(load_identities(truth.iloc[chosen])), chosen.astype(np.int64))


def from_population(
    directory: Path,
    schema: ClkSchema,
    secret: bytes,
    *,
    decoy_share: float = 0.0,
    party: str = TARGET_PARTY,
    seed: int = 0,
) -> EncodedTarget:
    """Encode one department of a population ``headcount.synth`` wrote to
    ``directory`` (with its ground_truth.csv) as a node would, decoys included."""
    frame = pd.read_csv(directory / f"{party}.csv", dtype=str, keep_default_na=False)
    truth = read_truth(directory / "ground_truth.csv")
    person_of = {rid: i for i, rid in enumerate(truth[f"{party}_id"]) if rid}
    person = np.array([person_of[r] for r in frame.record_id], dtype=np.int64)
    rng = np.random.default_rng(seed)
    clks = encode_clks(load_identities(frame), secret, schema, rng=rng)
    if decoy_share:
        decoys = decoy_clks(round(len(clks) * decoy_share), schema.clk_bits, fill_rates(clks), rng)
        order = rng.permutation(len(clks) + len(decoys))
        clks = np.vstack([clks, decoys])[order]
        person = np.concatenate([person, np.full(len(decoys), NO_PERSON)])[order]
    return EncodedTarget(clks, person, schema)


def from_federation(fed: LocalFederation, party: str = TARGET_PARTY) -> EncodedTarget:
    """``party``'s CLKs of the latest epoch, read from the coordinator's store,
    with each token's person found through the node's token map and the ground
    truth (scoring only)."""
    coordinator = fed.coordinator.coordinator
    epoch = coordinator.store.latest_epoch()
    with closing(sqlite3.connect(coordinator.store.path)) as db:
        rows = db.execute(
            "SELECT token, clk FROM encodings WHERE epoch_id = ? AND party = ? ORDER BY position",
            (epoch, party),
        ).fetchall()
    clks = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.uint8).reshape(len(rows), -1)
    tokens, file_rows = fed.nodes[party].node.store.token_rows(epoch)
    row_of = dict(zip(tokens, file_rows, strict=True))
    frame = pd.read_csv(fed.directory / "data" / f"{party}.csv", dtype=str, keep_default_na=False)
    truth = read_truth(fed.ground_truth)
    person_of = {rid: i for i, rid in enumerate(truth[f"{party}_id"]) if rid}
    person = np.array(
        [person_of[frame.record_id.iloc[row_of[bytes(r[0])]]] for r in rows], dtype=np.int64
    )
    return EncodedTarget(clks, person, coordinator.schema.clk)
