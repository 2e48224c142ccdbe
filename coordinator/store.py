"""The coordinator's state, in one SQLite file.

What is here is exactly what the coordinator holds: signed public identities,
sealed ceremony envelopes and commitments, keyed encodings under per-epoch
random tokens, the linkage graph over tokens, query metadata and released
(protected) tables. No raw identifier, linkage secret or attribute value is
ever written: the privacy tests read this file back to check.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from headcount.db import create_database, transaction
from headcount.errors import FailedPrecondition, InvalidRequest, UnknownJob

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    party TEXT PRIMARY KEY, identity BLOB NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ceremonies (
    ceremony_id TEXT PRIMARY KEY, parties TEXT NOT NULL, confirmed INTEGER NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ceremony_envelopes (
    ceremony_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
    PRIMARY KEY (ceremony_id, sender, recipient));
CREATE TABLE IF NOT EXISTS ceremony_commitments (
    ceremony_id TEXT NOT NULL, party TEXT NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (ceremony_id, party));
CREATE TABLE IF NOT EXISTS epochs (
    epoch_id TEXT PRIMARY KEY, ceremony_id TEXT NOT NULL, threshold REAL NOT NULL,
    schema_fingerprint TEXT NOT NULL, clusters INTEGER NOT NULL, created_at TEXT NOT NULL,
    quality TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS epoch_parties (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, records INTEGER NOT NULL,
    commitment BLOB NOT NULL, PRIMARY KEY (epoch_id, party));
CREATE TABLE IF NOT EXISTS encodings (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, position INTEGER NOT NULL,
    token BLOB NOT NULL, clk BLOB NOT NULL, household BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, position));
CREATE TABLE IF NOT EXISTS resolved_households (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL, household BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE TABLE IF NOT EXISTS duplicates (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL, primary_token BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE TABLE IF NOT EXISTS links (
    epoch_id TEXT NOT NULL, cluster INTEGER NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE INDEX IF NOT EXISTS links_by_cluster ON links (epoch_id, cluster);
CREATE TABLE IF NOT EXISTS pair_links (
    epoch_id TEXT NOT NULL, left_party TEXT NOT NULL, right_party TEXT NOT NULL,
    links INTEGER NOT NULL, PRIMARY KEY (epoch_id, left_party, right_party));
CREATE TABLE IF NOT EXISTS score_histograms (
    epoch_id TEXT NOT NULL, left_party TEXT NOT NULL, right_party TEXT NOT NULL,
    histogram TEXT NOT NULL, PRIMARY KEY (epoch_id, left_party, right_party));
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY, epoch_id TEXT NOT NULL, analyst TEXT NOT NULL,
    purpose TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY, doc TEXT NOT NULL, approvals TEXT NOT NULL DEFAULT '{}',
    revoked INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    query_id TEXT PRIMARY KEY, release TEXT NOT NULL, created_at TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


@dataclass(frozen=True, slots=True)
class EpochInfo:
    epoch_id: str
    ceremony_id: str
    threshold: float
    schema_fingerprint: str
    clusters: int
    records: dict[str, int]
    pair_links: dict[tuple[str, str], int]
    # "left|right" -> threshold, est_precision, est_recall, est_f1 (or None), key_links
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)


# Each entry takes the schema one version further (headcount.db.migrate); append,
# never edit, once released.
SCHEMA_STEPS: tuple[str, ...] = (_SCHEMA,)


class CoordinatorStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        create_database(path, "coordinator", SCHEMA_STEPS)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    # -- identities and ceremonies ----------------------------------------------
    def save_identity(self, party: str, identity: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO identities VALUES (?, ?, ?)", (party, identity, _now())
            )

    def identities(self) -> dict[str, bytes]:
        with self._tx() as db:
            return {r[0]: bytes(r[1]) for r in db.execute("SELECT party, identity FROM identities")}

    def save_ceremony(
        self,
        ceremony_id: str,
        parties: Sequence[str],
        envelopes: Sequence[tuple[str, str, bytes, bytes]],
        commitments: Sequence[tuple[str, bytes]],
        confirmed: bool,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO ceremonies VALUES (?, ?, ?, ?)",
                (ceremony_id, json.dumps(list(parties)), int(confirmed), _now()),
            )
            db.executemany(
                "INSERT INTO ceremony_envelopes VALUES (?, ?, ?, ?, ?)",
                ((ceremony_id, *e) for e in envelopes),
            )
            db.executemany(
                "INSERT INTO ceremony_commitments VALUES (?, ?, ?)",
                ((ceremony_id, p, d) for p, d in commitments),
            )

    def latest_ceremony(self) -> str:
        """The newest confirmed ceremony; FailedPrecondition if there is none."""
        with self._tx() as db:
            row = db.execute(
                "SELECT ceremony_id FROM ceremonies WHERE confirmed = 1"
                " ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        if row is None:
            raise FailedPrecondition(
                "no key ceremony has completed; run `headcount ceremony` first"
            )
        return str(row[0])

    # -- epochs ---------------------------------------------------------------------
    def save_epoch(
        self,
        epoch_id: str,
        ceremony_id: str,
        threshold: float,
        schema_fingerprint: str,
        encodings: Sequence[PartyEncodings],
        clusters: Sequence[dict[str, bytes]],
        pair_links: dict[tuple[str, str], int],
        quality: dict[str, dict[str, Any]] | None = None,
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
                    json.dumps(quality or {}, sort_keys=True),
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
            json.loads(row[5]),
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

    # -- queries and releases ----------------------------------------------------
    def save_query(
        self, query_id: str, epoch_id: str, analyst: str, purpose: str, spec: dict[str, Any]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    query_id,
                    epoch_id,
                    analyst,
                    purpose,
                    json.dumps(spec, sort_keys=True),
                    "running",
                    _now(),
                ),
            )

    def finish_query(self, query_id: str, status: str, release: dict[str, Any] | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE queries SET status = ? WHERE query_id = ?", (status, query_id))
            if release is not None:
                db.execute(
                    "INSERT INTO releases VALUES (?, ?, ?)",
                    (query_id, json.dumps(release, sort_keys=True), _now()),
                )

    def running_queries(self) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT query_id FROM queries WHERE status = 'running'").fetchall()
        return [str(r[0]) for r in rows]

    def query_status(self, query_id: str) -> str:
        with self._tx() as db:
            row = db.execute(
                "SELECT status FROM queries WHERE query_id = ?", (query_id,)
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no query {query_id}")
        return str(row[0])

    def charged_specs_with_dates(self) -> list[tuple[dict[str, Any], date]]:
        """Specs of every query that was (or may have been) charged, with its UTC day.

        A refused query never reached a node, so it charged nothing."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT spec, created_at FROM queries"
                " WHERE status IN ('released', 'running', 'failed', 'aborted')"
            ).fetchall()
        return [(json.loads(r[0]), datetime.fromisoformat(r[1]).date()) for r in rows]

    # -- projects --------------------------------------------------------------------
    def add_project(self, project_id: str, doc: dict[str, Any]) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM projects WHERE project_id = ?", (project_id,)).fetchone():
                raise InvalidRequest(f"project {project_id} already exists")
            db.execute(
                "INSERT INTO projects (project_id, doc, created_at) VALUES (?, ?, ?)",
                (project_id, json.dumps(doc, sort_keys=True), _now()),
            )

    def project(self, project_id: str) -> tuple[dict[str, Any], dict[str, str], bool]:
        """(document, {party: approval signature hex}, revoked); UnknownJob if absent."""
        with self._tx() as db:
            row = db.execute(
                "SELECT doc, approvals, revoked FROM projects WHERE project_id = ?", (project_id,)
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no project {project_id!r}; propose it first")
        return json.loads(row[0]), json.loads(row[1]), bool(row[2])

    def set_approval(self, project_id: str, party: str, signature_hex: str) -> None:
        with self._tx() as db:
            (raw,) = db.execute(
                "SELECT approvals FROM projects WHERE project_id = ?", (project_id,)
            ).fetchone()
            approvals = json.loads(raw)
            approvals[party] = signature_hex
            db.execute(
                "UPDATE projects SET approvals = ? WHERE project_id = ?",
                (json.dumps(approvals, sort_keys=True), project_id),
            )

    def revoke_project(self, project_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE projects SET revoked = 1 WHERE project_id = ?", (project_id,))

    def project_ids(self) -> list[str]:
        with self._tx() as db:
            return [r[0] for r in db.execute("SELECT project_id FROM projects ORDER BY created_at")]

    def query_count(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
