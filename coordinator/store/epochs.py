"""Linkage epochs in the coordinator's store: encodings under tokens, the graph, histograms."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.store.tables import Tables, _now
from headcount.errors import FailedPrecondition, UnknownJob


@dataclass(frozen=True, slots=True)
class PartyEncodings:
    party: str
    tokens: list[bytes]
    clks: np.ndarray  # uint8 (records, filter_bytes)
    commitment: bytes
    households: list[bytes]  # keyed household key per token, b"" if unknown
    # Keyed match-key digests, (levels, tokens) uint64, 0 meaning no key
    # (headcount.linkage.keylinks.wire_digests). Used for linkage in memory
    # only; never stored.
    match_keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint64))


# A pair of departments, (left, right) in the linkage's party order.
PairKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PairQuality:
    """What the coordinator keeps of one pair's linkage; it is never published."""

    threshold: float  # Dice threshold used for this pair
    key_links: int  # links found by exact keyed match-keys
    links: int
    # Estimated from the score distribution alone (4 decimals); None when too
    # few scores to fit.
    est_precision: float | None = None
    est_recall: float | None = None
    est_f1: float | None = None
    # What the estimate rests on (`linkage.quality.ESTIMATE_BASES`); None
    # without an estimate, and for epochs stored before it was kept.
    estimate_basis: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As the store keeps it: the estimates only when there are some."""
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "key_links": self.key_links,
            "links": self.links,
        }
        for name in ("est_precision", "est_recall", "est_f1", "estimate_basis"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairQuality:
        def estimate(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            threshold=float(data.get("threshold", 0.0)),
            key_links=int(data.get("key_links", 0)),
            links=int(data.get("links", 0)),
            est_precision=estimate("est_precision"),
            est_recall=estimate("est_recall"),
            est_f1=estimate("est_f1"),
            estimate_basis=_text(data.get("estimate_basis")),
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _quality_to_json(quality: Mapping[PairKey, PairQuality]) -> str:
    # Stored keyed "left|right", as it always was.
    return json.dumps({f"{a}|{b}": q.to_json() for (a, b), q in quality.items()}, sort_keys=True)


def _quality_from_json(text: str) -> dict[PairKey, PairQuality]:
    out: dict[PairKey, PairQuality] = {}
    for key, value in json.loads(text).items():
        left, _, right = str(key).partition("|")
        out[(left, right)] = PairQuality.from_json(value)
    return out


@dataclass(frozen=True, slots=True)
class EpochInfo:
    epoch_id: str
    ceremony_id: str
    threshold: float
    schema_fingerprint: str
    clusters: int
    records: dict[str, int]
    pair_links: dict[tuple[str, str], int]
    quality: dict[PairKey, PairQuality] = field(default_factory=dict)


class EpochTables(Tables):
    """Epochs: encodings under tokens, households, duplicates, links, histograms."""

    def save_epoch(
        self,
        epoch_id: str,
        ceremony_id: str,
        threshold: float,
        schema_fingerprint: str,
        encodings: Sequence[PartyEncodings],
        clusters: Sequence[dict[str, bytes]],
        pair_links: dict[tuple[str, str], int],
        quality: Mapping[PairKey, PairQuality] | None = None,
        score_histograms: dict[tuple[str, str], dict[str, Any]] | None = None,
        resolved_households: Mapping[str, Sequence[bytes]] | None = None,
        duplicates: Mapping[str, Mapping[bytes, bytes]] | None = None,
    ) -> None:
        """Store an epoch, its encodings and its graph in one transaction.

        ``duplicates``: per party, each further record of a person that party
        holds several records of -> the token of the person's first record (the
        one that is linked and counted; `headcount.linkage.dedup`).

        ``resolved_households``: per party, each token's household key as
        resolved through its person links (`headcount.linkage.households`),
        in token order, ``b""`` for none; household hops use these. Only the
        tokens whose resolved key differs from their own are stored (a few
        per cent of them), the rest being read from ``encodings``.

        ``score_histograms``: per party pair, binned link scores as JSON
        (`headcount.linkage.scores`): unprotected aggregates, kept here and out
        of the audit log; the quality report protects them before showing them.
        """
        with self._tx() as db:
            db.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    epoch_id,
                    ceremony_id,
                    threshold,
                    schema_fingerprint,
                    len(clusters),
                    _now(),
                    _quality_to_json(quality or {}),
                ),
            )
            for enc in encodings:
                db.execute(
                    "INSERT INTO epoch_parties VALUES (?, ?, ?, ?)",
                    (epoch_id, enc.party, len(enc.tokens), enc.commitment),
                )
                db.executemany(
                    "INSERT INTO encodings VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        (epoch_id, enc.party, i, tok, enc.clks[i].tobytes(), enc.households[i])
                        for i, tok in enumerate(enc.tokens)
                    ),
                )
            for enc in encodings:
                resolved = (resolved_households or {}).get(enc.party)
                if resolved is None:
                    continue
                if len(resolved) != len(enc.tokens):
                    raise ValueError(f"{enc.party}: one resolved household per token expected")
                db.executemany(
                    "INSERT INTO resolved_households VALUES (?, ?, ?, ?)",
                    (
                        (epoch_id, enc.party, tok, hh)
                        for tok, hh, own in zip(enc.tokens, resolved, enc.households, strict=True)
                        if hh != own
                    ),
                )
            db.executemany(
                "INSERT INTO duplicates VALUES (?, ?, ?, ?)",
                (
                    (epoch_id, party, token, primary)
                    for party, mapping in (duplicates or {}).items()
                    for token, primary in mapping.items()
                ),
            )
            db.executemany(
                "INSERT INTO links VALUES (?, ?, ?, ?)",
                (
                    (epoch_id, cid, party, token)
                    for cid, cluster in enumerate(clusters)
                    for party, token in cluster.items()
                ),
            )
            db.executemany(
                "INSERT INTO pair_links VALUES (?, ?, ?, ?)",
                ((epoch_id, a, b, n) for (a, b), n in pair_links.items()),
            )
            db.executemany(
                "INSERT INTO score_histograms VALUES (?, ?, ?, ?)",
                (
                    (epoch_id, a, b, json.dumps(h, sort_keys=True))
                    for (a, b), h in (score_histograms or {}).items()
                ),
            )

    def latest_epoch(self) -> str:
        with self._tx() as db:
            row = db.execute(
                "SELECT epoch_id FROM epochs ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        if row is None:
            raise FailedPrecondition("no linkage epoch exists; run `headcount link` first")
        return str(row[0])

    def epoch(self, epoch_id: str) -> EpochInfo:
        with self._tx() as db:
            row = db.execute(
                "SELECT epoch_id, ceremony_id, threshold, schema_fingerprint, clusters, quality"
                " FROM epochs WHERE epoch_id = ?",
                (epoch_id,),
            ).fetchone()
            if row is None:
                raise UnknownJob(f"no epoch {epoch_id}")
            records = dict(
                db.execute(
                    "SELECT party, records FROM epoch_parties WHERE epoch_id = ?", (epoch_id,)
                ).fetchall()
            )
            pairs = {
                (r[0], r[1]): int(r[2])
                for r in db.execute(
                    "SELECT left_party, right_party, links FROM pair_links WHERE epoch_id = ?",
                    (epoch_id,),
                )
            }
        return EpochInfo(
            str(row[0]),
            str(row[1]),
            float(row[2]),
            str(row[3]),
            int(row[4]),
            records,
            pairs,
            _quality_from_json(row[5]),
        )

    def score_histograms(self, epoch_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(left, right) -> binned link scores as stored by `save_epoch` ({} if none)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT left_party, right_party, histogram FROM score_histograms"
                " WHERE epoch_id = ?",
                (epoch_id,),
            ).fetchall()
        return {(str(r[0]), str(r[1])): json.loads(r[2]) for r in rows}

    def tokens(self, epoch_id: str, party: str) -> list[bytes]:
        """``party``'s tokens in the epoch, in the order the node sent them."""
        with self._tx() as db:
            return [
                bytes(r[0])
                for r in db.execute(
                    "SELECT token FROM encodings WHERE epoch_id = ? AND party = ?"
                    " ORDER BY position",
                    (epoch_id, party),
                )
            ]

    def households(self, epoch_id: str, party: str) -> dict[bytes, bytes]:
        """``party``'s token -> keyed household key, for tokens that have one."""
        with self._tx() as db:
            return {
                bytes(r[0]): bytes(r[1])
                for r in db.execute(
                    "SELECT token, household FROM encodings"
                    " WHERE epoch_id = ? AND party = ? AND length(household) > 0",
                    (epoch_id, party),
                )
            }

    def resolved_households(
        self, epoch_id: str, party: str, own: Mapping[bytes, bytes] | None = None
    ) -> dict[bytes, bytes]:
        """``party``'s token -> household key resolved through person links,
        for tokens that have one: its own key unless resolution changed it (an
        epoch stored before resolution existed keeps every token's own key).
        ``own``: `households` of the same party, when the caller already read it."""
        keys = dict(self.households(epoch_id, party) if own is None else own)
        with self._tx() as db:
            changed = db.execute(
                "SELECT token, household FROM resolved_households WHERE epoch_id = ? AND party = ?",
                (epoch_id, party),
            ).fetchall()
        for token, household in changed:
            if household:
                keys[bytes(token)] = bytes(household)
            else:
                keys.pop(bytes(token), None)
        return keys

    def duplicates(self, epoch_id: str, party: str) -> dict[bytes, bytes]:
        """``party``'s further records of a person -> the person's counted record."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT token, primary_token FROM duplicates WHERE epoch_id = ? AND party = ?",
                (epoch_id, party),
            ).fetchall()
        return {bytes(r[0]): bytes(r[1]) for r in rows}

    def linked(self, epoch_id: str, left: str, right: str) -> dict[bytes, bytes]:
        """right-party token -> left-party token, for clusters holding both."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT r.token, l.token FROM links l JOIN links r"
                " ON l.epoch_id = r.epoch_id AND l.cluster = r.cluster"
                " WHERE l.epoch_id = ? AND l.party = ? AND r.party = ?",
                (epoch_id, left, right),
            ).fetchall()
        return {bytes(r[0]): bytes(r[1]) for r in rows}
