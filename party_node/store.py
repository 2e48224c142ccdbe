"""A party node's own state, in one SQLite file beside its data.

Holds the node's private keys, its ceremony contributions and derived linkage
secrets, each epoch's token-to-row map and dataset commitment, and the queries
it took part in. The file never leaves the node. Every write that belongs
together happens in one transaction, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headcount.db import create_database, transaction
from headcount.errors import FailedPrecondition, InvalidRequest, UnknownJob

_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ceremonies (
    ceremony_id TEXT PRIMARY KEY,
    contribution BLOB NOT NULL,
    identities TEXT NOT NULL,
    secret BLOB,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    epoch_id TEXT PRIMARY KEY,
    ceremony_id TEXT NOT NULL,
    records INTEGER NOT NULL,
    data_sha256 BLOB NOT NULL,
    commitment BLOB NOT NULL,
    salt BLOB NOT NULL,
    schema_fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    epoch_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    token BLOB NOT NULL,
    row INTEGER NOT NULL,
    household BLOB NOT NULL,
    PRIMARY KEY (epoch_id, position),
    UNIQUE (epoch_id, token)
);
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    epoch_id TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    epsilon REAL NOT NULL,
    decrypted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    packing TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS noise_shares (
    query_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Epoch:
    epoch_id: str
    ceremony_id: str
    records: int
    data_sha256: bytes
    commitment: bytes
    schema_fingerprint: str


@dataclass(frozen=True, slots=True)
class QueryRecord:
    query_id: str
    epoch_id: str
    role: str  # "origin" | "group"
    epsilon: float
    decrypted: bool
    packing: dict[str, Any]  # the origin's slot layout and what each slot holds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Each entry takes the schema one version further (headcount.db.migrate); append,
# never edit, once released.
SCHEMA_STEPS: tuple[str, ...] = (_SCHEMA,)


class NodeStore:
    """SQLite-backed state of one party node; safe to use from server threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_database(path, "party_node", SCHEMA_STEPS, owner_only=True)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    # -- long-term secrets ---------------------------------------------------
    def get_secret(self, name: str) -> bytes | None:
        with self._tx() as db:
            row = db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_secret(self, name: str, value: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (name, value))

    # -- key ceremony ----------------------------------------------------------
    def start_ceremony(self, ceremony_id: str, contribution: bytes, identities: str) -> None:
        with self._tx() as db:
            if db.execute(
                "SELECT 1 FROM ceremonies WHERE ceremony_id = ?", (ceremony_id,)
            ).fetchone():
                raise InvalidRequest(
                    f"ceremony {ceremony_id} was already started; ids are single-use"
                )
            db.execute(
                "INSERT INTO ceremonies (ceremony_id, contribution, identities, created_at)"
                " VALUES (?, ?, ?, ?)",
                (ceremony_id, contribution, identities, _now()),
            )

    def ceremony(self, ceremony_id: str) -> tuple[bytes, str, bytes | None]:
        """(contribution, identities JSON, secret or None); UnknownJob if absent."""
        with self._tx() as db:
            row = db.execute(
                "SELECT contribution, identities, secret FROM ceremonies WHERE ceremony_id = ?",
                (ceremony_id,),
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no ceremony {ceremony_id} at this node")
        return bytes(row[0]), str(row[1]), None if row[2] is None else bytes(row[2])

    def finish_ceremony(self, ceremony_id: str, secret: bytes) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE ceremonies SET secret = ? WHERE ceremony_id = ? AND secret IS NULL",
                (secret, ceremony_id),
            )
            if cur.rowcount != 1:
                raise InvalidRequest(f"ceremony {ceremony_id} is unknown or already finished")

    # -- linkage epochs ----------------------------------------------------------
    def save_epoch(
        self,
        epoch: Epoch,
        salt: bytes,
        tokens: Sequence[bytes],
        rows: Sequence[int],
        households: Sequence[bytes],
    ) -> None:
        """Store an epoch and its token map atomically; InvalidRequest if the id is taken."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM epochs WHERE epoch_id = ?", (epoch.epoch_id,)).fetchone():
                raise InvalidRequest(f"epoch {epoch.epoch_id} already exists at this node")
            db.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    epoch.epoch_id,
                    epoch.ceremony_id,
                    epoch.records,
                    epoch.data_sha256,
                    epoch.commitment,
                    salt,
                    epoch.schema_fingerprint,
                    _now(),
                ),
            )
            db.executemany(
                "INSERT INTO tokens (epoch_id, position, token, row, household)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    (epoch.epoch_id, i, t, r, h)
                    for i, (t, r, h) in enumerate(zip(tokens, rows, households, strict=True))
                ),
            )

    def epoch(self, epoch_id: str) -> Epoch:
        with self._tx() as db:
            row = db.execute(
                "SELECT epoch_id, ceremony_id, records, data_sha256, commitment, schema_fingerprint"
                " FROM epochs WHERE epoch_id = ?",
                (epoch_id,),
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no epoch {epoch_id} at this node")
        return Epoch(
            str(row[0]), str(row[1]), int(row[2]), bytes(row[3]), bytes(row[4]), str(row[5])
        )

    def has_epoch(self, epoch_id: str) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT 1 FROM epochs WHERE epoch_id = ?", (epoch_id,)).fetchone()
        return row is not None

    def token_rows(self, epoch_id: str) -> tuple[list[bytes], list[int]]:
        """Tokens in the order they were sent, and the file row each stands for."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT token, row FROM tokens WHERE epoch_id = ? ORDER BY position", (epoch_id,)
            ).fetchall()
        return [bytes(r[0]) for r in rows], [int(r[1]) for r in rows]

    def household_keys(self, epoch_id: str) -> list[bytes]:
        """Each token's keyed household key (b"" if none), in token order."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT household FROM tokens WHERE epoch_id = ? ORDER BY position", (epoch_id,)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def epochs(self) -> list[Epoch]:
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT epoch_id FROM epochs ORDER BY created_at")]
        return [self.epoch(i) for i in ids]

    # -- queries -------------------------------------------------------------------
    def record_query(
        self,
        query_id: str,
        epoch_id: str,
        role: str,
        purpose: str,
        epsilon: float,
        packing: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM queries WHERE query_id = ?", (query_id,)).fetchone():
                raise InvalidRequest(f"query {query_id} was already seen here; ids are single-use")
            db.execute(
                "INSERT INTO queries"
                " (query_id, epoch_id, role, purpose, epsilon, created_at, packing)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (query_id, epoch_id, role, purpose, epsilon, _now(), json.dumps(packing or {})),
            )

    def abandon_origin_query(self, query_id: str) -> str | None:
        """Mark a query this node encrypted for as never to be decrypted, if it has
        not been; return its epoch id then, else None (not ours, or decrypted)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT epoch_id FROM queries WHERE query_id = ? AND role = 'origin'"
                " AND decrypted = 0",
                (query_id,),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE queries SET decrypted = -1 WHERE query_id = ?", (query_id,))
        return str(row[0])

    def abandon(self, query_id: str, epoch_id: str) -> None:
        """Promise never to decrypt ``query_id`` (as its origin), even if it never
        encrypted for it; raise FailedPrecondition if it already decrypted it."""
        with self._tx() as db:
            row = db.execute(
                "SELECT role, decrypted FROM queries WHERE query_id = ?", (query_id,)
            ).fetchone()
            if row is None:
                # Never encrypted here: the id is taken, so it can never start.
                db.execute(
                    "INSERT INTO queries (query_id, epoch_id, role, purpose, epsilon, decrypted,"
                    " created_at) VALUES (?, ?, 'origin', '', 0.0, -1, ?)",
                    (query_id, epoch_id, _now()),
                )
            elif row[0] != "origin":
                raise FailedPrecondition(f"this node is not the origin of query {query_id}")
            elif row[1] == 1:
                raise FailedPrecondition(f"query {query_id} was decrypted; it cannot be abandoned")
            else:
                db.execute("UPDATE queries SET decrypted = -1 WHERE query_id = ?", (query_id,))

    def claim_noise(self, query_id: str) -> None:
        """Record that this node added its noise share to ``query_id``; refuse a second time."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM noise_shares WHERE query_id = ?", (query_id,)).fetchone():
                raise FailedPrecondition(
                    f"this node already added its noise share to query {query_id}"
                )
            db.execute(
                "INSERT INTO noise_shares VALUES (?, ?)",
                (query_id, _now()),
            )

    def claim_decryption(self, query_id: str) -> QueryRecord:
        """Mark an origin query decrypted, once; refuse any other query or a second time."""
        with self._tx() as db:
            row = db.execute(
                "SELECT query_id, epoch_id, role, epsilon, decrypted, packing FROM queries"
                " WHERE query_id = ?",
                (query_id,),
            ).fetchone()
            if row is None or row[2] != "origin":
                raise UnknownJob(f"this node encrypted nothing for query {query_id}")
            if row[4] == -1:
                raise FailedPrecondition(
                    f"query {query_id} was abandoned (the audit log records its failure); "
                    "its results are never decrypted"
                )
            if row[4]:
                raise FailedPrecondition(
                    f"query {query_id} was already decrypted; results are released once"
                )
            db.execute("UPDATE queries SET decrypted = 1 WHERE query_id = ?", (query_id,))
        return QueryRecord(
            str(row[0]), str(row[1]), str(row[2]), float(row[3]), True, json.loads(row[5])
        )
