"""Tamper-evident audit log: typed, append-only, hash-chained, signed events in SQLite.

The coordinator's primary log signs each event's hash with the federation's
Ed25519 audit key; replicas and auditors verify with its public key, which the
federation config carries, so a forged event is refused even with a valid chain.

Every event's hash covers its own content and the previous event's hash, so
editing, deleting, reordering or inserting any event breaks every link after it.
What the chain alone cannot show is a rewrite of the whole tail or a truncated
head: each is a valid shorter or different chain. That is why every party node
keeps a replica (``AuditLog.import_event``) and nodes compare head hashes: a log
that disagrees with another node's head has been rewritten.

Bodies are JSON and hold only aggregate facts (epoch sizes, commitments, query
purposes, epsilon spent, released tables); never a record, token or per-record value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from headcount.db import create_database
from headcount.domain.events import Event, UnknownEvent, parse_event
from headcount.errors import InvalidProof, InvalidRequest

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64  # prev_hash of the first event, and head of an empty log

# A released table with its cells is the largest event the coordinator writes
# (well under 1 MB); anything larger is refused unread.
MAX_EVENT_CHARS = 4_000_000

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_SIG_RE = re.compile(r"(?:[0-9a-f]{128})?")
_SIGNING_CONTEXT = b"headcount/audit/v1\x00"
_KIND_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS audit_events (
        seq       INTEGER PRIMARY KEY CHECK (seq >= 0),
        kind      TEXT NOT NULL,
        body      TEXT NOT NULL,
        at        TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL UNIQUE,
        signature TEXT NOT NULL DEFAULT ''
    )
    """,
    # Refuse edits through SQLite itself. This stops accidents, not an attacker
    # with the file (who can drop the trigger); the hash chain catches that one.
    """
    CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
)
# Each entry takes the schema one version further (headcount.db.migrate); append,
# never edit, once released.
SCHEMA_STEPS: tuple[str, ...] = (";\n".join(_SCHEMA),)


def canonical_json(value: Any) -> str:
    """The one JSON spelling hashed and stored: sorted keys, no spaces, UTF-8 text.

    Raises ``InvalidRequest`` for a value JSON cannot hold exactly (NaN, infinity,
    non-string keys, or a non-JSON type).
    """
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"audit data is not canonical JSON: {exc}") from None
    # A body must read back as itself, or the stored event would differ from the
    # hashed one: tuples become lists and int keys become strings on the way back.
    if json.loads(text) != value:
        raise InvalidRequest("audit data must be plain JSON (str keys, lists, no tuples)")
    return text


def event_hash(seq: int, kind: str, body: Mapping[str, Any], at: str, prev_hash: str) -> str:
    """Hex SHA-256 over the canonical JSON array ``[seq, kind, body, at, prev_hash]``.

    Raises ``InvalidRequest`` if ``body`` is not plain JSON.
    """
    payload = canonical_json([seq, kind, dict(body), at, prev_hash])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event. Fields are checked for form here; links in ``verify_chain``.

    ``seq`` counts from 0; ``kind`` is a short lowercase name ("ceremony", "epoch",
    "query", "release", "refusal", ...); ``body`` is plain JSON; ``at`` is a UTC
    ISO-8601 time; ``prev_hash`` and ``hash`` are 64 lowercase hex digits.
    Raises ``InvalidRequest`` for a malformed field.
    """

    seq: int
    kind: str
    body: Mapping[str, Any]
    at: str
    prev_hash: str
    hash: str
    signature: str = ""  # hex Ed25519 signature over the hash by the log's signer; "" if unsigned

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise InvalidRequest(f"seq must be an int >= 0, got {self.seq!r}")
        if not isinstance(self.kind, str) or not _KIND_RE.fullmatch(self.kind):
            raise InvalidRequest(f"kind must be a short lowercase name, got {self.kind!r}")
        if not isinstance(self.body, Mapping):
            raise InvalidRequest("body must be a mapping")
        canonical_json(dict(self.body))
        try:
            when = datetime.fromisoformat(self.at)
        except (TypeError, ValueError):
            raise InvalidRequest(f"at must be an ISO-8601 time, got {self.at!r}") from None
        if when.utcoffset() != timedelta(0):
            raise InvalidRequest(f"at must be in UTC, got {self.at!r}")
        for name in ("prev_hash", "hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
                raise InvalidRequest(f"{name} must be 64 lowercase hex digits")
        if not isinstance(self.signature, str) or not _SIG_RE.fullmatch(self.signature):
            raise InvalidRequest("signature must be empty or 128 lowercase hex digits")

    def typed(self) -> Event | UnknownEvent:
        """This event's body as its kind's dataclass (``headcount.domain.events``).

        Raises ``InvalidRequest`` for a known kind whose body is malformed.
        """
        return parse_event(self.kind, self.body)

    def computed_hash(self) -> str:
        """What ``hash`` should be for this event's content."""
        return event_hash(self.seq, self.kind, self.body, self.at, self.prev_hash)

    def to_json(self) -> str:
        """Canonical JSON object with all six fields, for transport to replicas."""
        return canonical_json(
            {
                "seq": self.seq,
                "kind": self.kind,
                "body": dict(self.body),
                "at": self.at,
                "prev_hash": self.prev_hash,
                "hash": self.hash,
                "signature": self.signature,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AuditEvent:
        """Parse ``to_json`` output. Raises ``InvalidRequest`` if malformed.

        The hash is not checked here; ``verify_chain``/``import_event`` do that.
        """
        if isinstance(text, str) and len(text) > MAX_EVENT_CHARS:
            raise InvalidRequest(f"audit event is longer than {MAX_EVENT_CHARS} characters")
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise InvalidRequest("audit event is not valid JSON") from None
        except RecursionError:
            raise InvalidRequest("audit event JSON is nested too deeply") from None
        fields = {"seq", "kind", "body", "at", "prev_hash", "hash", "signature"}
        if isinstance(data, dict):
            data.setdefault("signature", "")
        if not isinstance(data, dict) or set(data) != fields:
            raise InvalidRequest(f"audit event must have exactly the fields {sorted(fields)}")
        return cls(**data)


def sign_event_hash(key: Ed25519PrivateKey, event_hash_hex: str) -> str:
    """Hex Ed25519 signature over an event hash (with a domain-separation prefix)."""
    return key.sign(_SIGNING_CONTEXT + bytes.fromhex(event_hash_hex)).hex()


def check_signature(key: Ed25519PublicKey, event: AuditEvent) -> None:
    """Raise ``InvalidProof`` naming the seq unless ``event`` is signed by ``key``."""
    if not event.signature:
        raise InvalidProof(f"audit chain broken at seq {event.seq}: event is not signed")
    try:
        key.verify(bytes.fromhex(event.signature), _SIGNING_CONTEXT + bytes.fromhex(event.hash))
    except InvalidSignature:
        raise InvalidProof(
            f"audit chain broken at seq {event.seq}: signature does not verify"
        ) from None


def verify_chain(
    events: Sequence[AuditEvent],
    public_key: Ed25519PublicKey | None = None,
    *,
    start: tuple[int, str] = (0, GENESIS_HASH),
) -> str:
    """Check that ``events`` form one unbroken chain from seq 0; return the head hash.

    ``start`` (next seq, head hash) continues a chain already verified up to
    that head, so a replica checks only what arrived since.

    With ``public_key``, every event must also carry a valid signature by it.

    Raises ``InvalidProof`` naming the first bad seq (the position where the chain
    breaks) for an edited, deleted, reordered or inserted event. A truncated or
    wholly rewritten tail verifies, with a different head: compare heads with a
    replica to catch it. An empty chain has head ``GENESIS_HASH``.
    """
    first, head = start
    for position, event in enumerate(events, start=first):
        if event.seq != position:
            raise InvalidProof(
                f"audit chain broken at seq {position}: found an event numbered {event.seq}"
            )
        if event.prev_hash != head:
            raise InvalidProof(
                f"audit chain broken at seq {position}: prev_hash does not match the event before"
            )
        if event.computed_hash() != event.hash:
            raise InvalidProof(f"audit chain broken at seq {position}: event hash does not match")
        if public_key is not None:
            check_signature(public_key, event)
        head = event.hash
    return head


@dataclass(frozen=True, slots=True)
class AuditTrail:
    """A copy of the audit log as a server hands it out: its events in order and
    the head it claims. Nothing is verified on arrival (``verify_chain``)."""

    events: tuple[AuditEvent, ...]
    head: str


class AuditLog:
    """Append-only audit log stored at ``db_path`` (parent directory must exist).

    Each call opens and closes its own connection and writes inside ``BEGIN
    IMMEDIATE``, so concurrent writers (threads or processes) serialise and never
    fork the chain. A log is either a primary (``append``) or a replica
    (``import_event``) of another node's primary.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        signer: Ed25519PrivateKey | None = None,
        verifier: Ed25519PublicKey | None = None,
    ) -> None:
        """``signer`` signs appended events (the primary); ``verifier`` checks
        signatures on import and in ``verify`` (replicas, auditors)."""
        self._db_path = Path(db_path)
        self._signer = signer
        self._verifier = verifier
        create_database(self._db_path, "audit", SCHEMA_STEPS)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: only the explicit BEGIN IMMEDIATE opens a transaction.
        return sqlite3.connect(self._db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

    @staticmethod
    def _last(conn: sqlite3.Connection) -> tuple[int, str]:
        """(next seq, head hash) as stored."""
        row = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        last = row.fetchone()
        return (0, GENESIS_HASH) if last is None else (int(last[0]) + 1, str(last[1]))

    @staticmethod
    def _insert(conn: sqlite3.Connection, event: AuditEvent) -> None:
        conn.execute(
            "INSERT INTO audit_events (seq, kind, body, at, prev_hash, hash, signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq,
                event.kind,
                canonical_json(dict(event.body)),
                event.at,
                event.prev_hash,
                event.hash,
                event.signature,
            ),
        )

    def log(self, event: Event) -> AuditEvent:
        """Add a typed event after the current head and return the stored event."""
        return self.append(event.KIND, event.to_body())

    def append(self, kind: str, body: Mapping[str, Any]) -> AuditEvent:
        """Add an event of any kind and body after the current head and return it.

        The coordinator logs typed events (``log``); this raw form is for tools
        and tests that write a log by hand. Raises ``InvalidRequest`` for a
        malformed kind or a body that is not plain JSON.
        """
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq, head = self._last(conn)
                at = _now()
                # Keep a private copy, so a caller mutating its dict later cannot
                # make the returned event disagree with its hash.
                body = json.loads(canonical_json(dict(body)))
                digest = event_hash(seq, kind, body, at, head)
                signature = sign_event_hash(self._signer, digest) if self._signer else ""
                event = AuditEvent(seq, kind, body, at, head, digest, signature)
                self._insert(conn, event)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("audit: appended seq %d (%s)", event.seq, event.kind)
        return event

    def import_event(self, event: AuditEvent) -> None:
        """Store ``event`` received from the primary log, as the next link of this replica.

        Accepts only the next seq whose ``prev_hash`` is this replica's head and
        whose hash verifies; importing an event identical to one already stored
        does nothing (so a resent batch is harmless). Raises ``InvalidProof``
        otherwise, including for a different event under an already-stored seq,
        which means the primary's history has forked.
        """
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = conn.execute(
                    "SELECT seq, kind, body, at, prev_hash, hash, signature FROM audit_events"
                    " WHERE seq = ?",
                    (event.seq,),
                ).fetchone()
                if stored is not None:
                    if _row_to_event(stored) != event:
                        raise InvalidProof(
                            f"audit event seq {event.seq} differs from the one already stored"
                        )
                    conn.execute("ROLLBACK")
                    return
                next_seq, head = self._last(conn)
                if event.seq != next_seq:
                    raise InvalidProof(
                        f"audit event seq {event.seq} is out of order; expected seq {next_seq}"
                    )
                if event.prev_hash != head:
                    raise InvalidProof(f"audit event seq {event.seq} does not extend this head")
                if event.computed_hash() != event.hash:
                    raise InvalidProof(f"audit event seq {event.seq}: hash does not match")
                if self._verifier is not None:
                    check_signature(self._verifier, event)
                self._insert(conn, event)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("audit: imported seq %d (%s)", event.seq, event.kind)

    def events(self, since: int = 0) -> list[AuditEvent]:
        """The events numbered ``since`` and after (all by default), in seq order."""
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT seq, kind, body, at, prev_hash, hash, signature FROM audit_events"
                " WHERE seq >= ? ORDER BY seq",
                (since,),
            ).fetchall()
        return [_row_to_event(row) for row in rows]

    def find(self, kind: str, path: str, value: str) -> list[AuditEvent]:
        """The ``kind`` events whose body holds ``value`` at JSON ``path`` (e.g.
        ``$.query_id``), in seq order: a lookup that does not read the whole log."""
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT seq, kind, body, at, prev_hash, hash, signature FROM audit_events"
                " WHERE kind = ? AND json_extract(body, ?) = ? ORDER BY seq",
                (kind, path, value),
            ).fetchall()
        return [_row_to_event(row) for row in rows]

    def next_head(self) -> tuple[int, str]:
        """(next seq, head hash) as stored (unverified)."""
        with closing(self._connect()) as conn:
            return self._last(conn)

    def head(self) -> str:
        """Hash of the last stored event, or ``GENESIS_HASH`` for an empty log (unverified)."""
        with closing(self._connect()) as conn:
            return self._last(conn)[1]

    def verify(self) -> str:
        """Verify the whole stored chain and return its head; raises ``InvalidProof``."""
        return verify_chain(self.events(), self._verifier)


def _row_to_event(row: Sequence[Any]) -> AuditEvent:
    seq, kind, body, at, prev_hash, hash_, signature = row
    try:
        return AuditEvent(
            int(seq), str(kind), json.loads(body), str(at), str(prev_hash), hash_, str(signature)
        )
    except (ValueError, InvalidRequest) as exc:
        # Only a file edited outside this module can hold a malformed row.
        raise InvalidProof(f"audit chain broken at seq {seq}: stored event is malformed") from exc
