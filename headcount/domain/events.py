"""The audit log's events, one frozen dataclass per kind.

Each class names its kind (``KIND``) and its JSON body exactly: ``to_body()``
gives the body the coordinator logs, and ``from_body(body)`` reads one back,
raising ``InvalidRequest`` for anything else (a missing or unnamed key, a
value of the wrong type). The log is hash-chained and signed over the
canonical JSON of each body, so ``from_body(b).to_body()`` must be ``b`` to
the byte: numbers keep their JSON type (an ``int`` epsilon stays an ``int``),
lists stay in their order, and optional fields a body does not carry stay
absent rather than becoming ``null``.

``parse_event(kind, body)`` reads any event; a kind this version does not
know (an older or newer log) reads as an ``UnknownEvent`` holding the raw body.

A query's ``spec``, ``noise`` and ``packing`` and a release's ``table`` stay
JSON objects here: every node re-derives the noise plan and the slot layout
from public facts and refuses (``PolicyRefused``) an announcement that
differs, and the register reads a table defensively, so each reader checks
them where it knows what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from headcount.crypto.attest import Abandonment
from headcount.domain.projects import ProjectDoc
from headcount.errors import InvalidProof, InvalidRequest

Json = dict[str, Any]


class _Body:
    """Typed reads of one event body; every read raises ``InvalidRequest``."""

    def __init__(
        self, kind: str, body: object, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> None:
        if not isinstance(body, Mapping):
            raise InvalidRequest(f"a {kind} event's body must be a JSON object")
        missing = [k for k in required if k not in body]
        unnamed = sorted(str(k) for k in body if k not in required and k not in optional)
        if missing:
            raise InvalidRequest(f"a {kind} event lacks {missing}")
        if unnamed:
            raise InvalidRequest(f"a {kind} event has fields its kind does not name: {unnamed}")
        self.kind, self.body = kind, body

    def _bad(self, key: str, what: str) -> InvalidRequest:
        return InvalidRequest(f"a {self.kind} event's {key} must be {what}")

    def has(self, key: str) -> bool:
        return key in self.body

    def text(self, key: str) -> str:
        value = self.body[key]
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def flag(self, key: str) -> bool:
        value = self.body[key]
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def number(self, key: str) -> float:
        value = self.body[key]
        if not _is_number(value):
            raise self._bad(key, "a number")
        return value  # type: ignore[no-any-return]  # int or float, as logged

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.body[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def obj(self, key: str) -> Json:
        value = self.body[key]
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self._bad(key, "a JSON object")
        return value

    def text_map(self, key: str) -> dict[str, str]:
        value = self.obj(key)
        if not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of strings")
        return dict(value)

    def num_map(self, key: str) -> dict[str, float]:
        value = self.obj(key)
        if not all(_is_number(v) for v in value.values()):
            raise self._bad(key, "an object of numbers")
        return dict(value)

    def int_map(self, key: str) -> dict[str, int]:
        value = self.obj(key)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            raise self._bad(key, "an object of whole numbers")
        return dict(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TypedEvent:
    """What every known kind has: its name, its body, and a reader of its body."""

    __slots__ = ()
    KIND: ClassVar[str]

    @property
    def kind(self) -> str:
        return self.KIND

    def to_body(self) -> Json:
        """The body as logged: plain JSON, the same bytes ``from_body`` read."""
        raise NotImplementedError

    @classmethod
    def from_body(cls, body: object) -> Self:
        """Read a logged body; raises ``InvalidRequest`` unless it is exactly this kind's."""
        raise NotImplementedError


# -- the key ceremony and linkage epochs -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CeremonyHeld(TypedEvent):
    """The parties' key ceremony: each one's commitment, and whether all agreed."""

    KIND: ClassVar[str] = "ceremony"
    ceremony_id: str
    parties: tuple[str, ...]
    commitments: Mapping[str, str]  # party -> hex digest of its contribution
    confirmed: bool

    def to_body(self) -> Json:
        return {
            "ceremony_id": self.ceremony_id,
            "parties": list(self.parties),
            "commitments": dict(self.commitments),
            "confirmed": self.confirmed,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("ceremony_id", "parties", "commitments", "confirmed"))
        return cls(
            b.text("ceremony_id"),
            b.texts("parties"),
            b.text_map("commitments"),
            b.flag("confirmed"),
        )


@dataclass(frozen=True, slots=True)
class EpochStarted(TypedEvent):
    """A linkage epoch announced: nodes encode their data only for an announced one."""

    KIND: ClassVar[str] = "epoch_started"
    epoch_id: str
    ceremony_id: str
    parties: tuple[str, ...]

    def to_body(self) -> Json:
        return {
            "epoch_id": self.epoch_id,
            "ceremony_id": self.ceremony_id,
            "parties": list(self.parties),
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("epoch_id", "ceremony_id", "parties"))
        return cls(b.text("epoch_id"), b.text("ceremony_id"), b.texts("parties"))


@dataclass(frozen=True, slots=True)
class EpochLinked(TypedEvent):
    """A finished linkage epoch: each department's record count, each one's
    commitment to its encodings, the schema and the configured threshold."""

    KIND: ClassVar[str] = "epoch"
    epoch_id: str
    ceremony_id: str
    records: Mapping[str, int]  # party -> records it uploaded
    commitments: Mapping[str, str]  # party -> hex commitment to its encodings
    schema_fingerprint: str
    threshold: float  # the configured one, in (0, 1]; int or float as logged

    def to_body(self) -> Json:
        return {
            "epoch_id": self.epoch_id,
            "ceremony_id": self.ceremony_id,
            "records": dict(self.records),
            "commitments": dict(self.commitments),
            "schema_fingerprint": self.schema_fingerprint,
            "threshold": self.threshold,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        keys = ("epoch_id", "ceremony_id", "records", "commitments", "schema_fingerprint")
        b = _Body(cls.KIND, body, (*keys, "threshold"))
        return cls(
            b.text("epoch_id"),
            b.text("ceremony_id"),
            b.int_map("records"),
            b.text_map("commitments"),
            b.text("schema_fingerprint"),
            b.number("threshold"),
        )


@dataclass(frozen=True, slots=True)
class EpochAborted(TypedEvent):
    KIND: ClassVar[str] = "epoch_aborted"
    epoch_id: str
    reason: str

    def to_body(self) -> Json:
        return {"epoch_id": self.epoch_id, "reason": self.reason}

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("epoch_id", "reason"))
        return cls(b.text("epoch_id"), b.text("reason"))


# -- projects (Five Safes: safe projects) ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProjectProposed(TypedEvent):
    KIND: ClassVar[str] = "project_proposed"
    project: ProjectDoc
    digest: str  # ProjectDoc.digest() as the coordinator computed it

    def to_body(self) -> Json:
        return {"project": self.project.to_json(), "digest": self.digest}

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("project", "digest"))
        raw = b.obj("project")
        try:
            doc = ProjectDoc.from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"a project_proposed event's project is malformed: {exc}"
            ) from None
        # ProjectDoc.to_json sorts the parties: a body that is not in that form
        # would not read back as itself.
        if doc.to_json() != raw or not isinstance(raw["parties"], list):
            raise InvalidRequest("a project_proposed event's project is not in canonical form")
        return cls(doc, b.text("digest"))


@dataclass(frozen=True, slots=True)
class _ProjectDecision(TypedEvent):
    """A signed decision on a project: by a department's steward, or the operator's revocation."""

    project_id: str
    digest: str  # of the project document decided on
    party: str  # who decided
    role: str  # "party" or "operator"
    signature: str  # hex; "" for an operator's revocation

    def to_body(self) -> Json:
        return {
            "project_id": self.project_id,
            "digest": self.digest,
            "party": self.party,
            "role": self.role,
            "signature": self.signature,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("project_id", "digest", "party", "role", "signature"))
        return cls(
            b.text("project_id"),
            b.text("digest"),
            b.text("party"),
            b.text("role"),
            b.text("signature"),
        )


@dataclass(frozen=True, slots=True)
class ProjectApproved(_ProjectDecision):
    KIND: ClassVar[str] = "project_approved"


@dataclass(frozen=True, slots=True)
class ProjectRevoked(_ProjectDecision):
    KIND: ClassVar[str] = "project_revoked"


# -- queries -----------------------------------------------------------------------------------
_QUERY_OPTIONAL = ("project_id", "analyst", "role", "spec", "noise", "packing")


@dataclass(frozen=True, slots=True)
class QueryAnnounced(TypedEvent):
    """A query announced before any node takes part in it.

    The coordinator always writes every field; the optional ones are absent
    only from hand-made announcements (the attack suite's, tests'), which
    nodes then refuse for want of a chain or a slot layout.
    """

    KIND: ClassVar[str] = "query"
    query_id: str
    epoch_id: str
    purpose: str
    parties: tuple[str, ...]  # the chain, origin first
    epsilon: float  # int or float as logged
    project_id: str | None = None
    analyst: str | None = None
    role: str | None = None
    spec: Json | None = None  # QuerySpec.to_json()
    noise: Json | None = None  # NoisePlan.to_json(), re-derived by every node
    packing: Json | None = None  # Packing.to_json(), re-derived by every node

    @property
    def origin(self) -> str:
        return self.parties[0] if self.parties else ""

    def to_body(self) -> Json:
        body: Json = {
            "query_id": self.query_id,
            "epoch_id": self.epoch_id,
            "purpose": self.purpose,
            "parties": list(self.parties),
            "epsilon": self.epsilon,
        }
        for key in _QUERY_OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body

    @classmethod
    def from_body(cls, body: object) -> Self:
        required = ("query_id", "epoch_id", "purpose", "parties", "epsilon")
        b = _Body(cls.KIND, body, required, _QUERY_OPTIONAL)

        def text(key: str) -> str | None:
            return b.text(key) if b.has(key) else None

        def obj(key: str) -> Json | None:
            return b.obj(key) if b.has(key) else None

        return cls(
            b.text("query_id"),
            b.text("epoch_id"),
            b.text("purpose"),
            b.texts("parties"),
            b.number("epsilon"),
            project_id=text("project_id"),
            analyst=text("analyst"),
            role=text("role"),
            spec=obj("spec"),
            noise=obj("noise"),
            packing=obj("packing"),
        )


@dataclass(frozen=True, slots=True)
class TableReleased(TypedEvent):
    """A released table, with what it cost each department and what each has left."""

    KIND: ClassVar[str] = "release"
    query_id: str
    epoch_id: str
    analyst: str
    purpose: str
    parties: tuple[str, ...]
    epsilon: float
    period: str  # the budget period charged, e.g. "2026"
    budget_remaining: Mapping[str, float]  # party -> epsilon left in the period
    table: Json  # the released table as the coordinator's store keeps it

    def to_body(self) -> Json:
        return {
            "query_id": self.query_id,
            "epoch_id": self.epoch_id,
            "analyst": self.analyst,
            "purpose": self.purpose,
            "parties": list(self.parties),
            "epsilon": self.epsilon,
            "period": self.period,
            "budget_remaining": dict(self.budget_remaining),
            "table": self.table,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        texts = ("query_id", "epoch_id", "analyst", "purpose")
        rest = ("parties", "epsilon", "period", "budget_remaining", "table")
        b = _Body(cls.KIND, body, (*texts, *rest))
        return cls(
            b.text("query_id"),
            b.text("epoch_id"),
            b.text("analyst"),
            b.text("purpose"),
            b.texts("parties"),
            b.number("epsilon"),
            b.text("period"),
            b.num_map("budget_remaining"),
            b.obj("table"),
        )


@dataclass(frozen=True, slots=True)
class QueryRefused(TypedEvent):
    """A refused query, or one that failed; with its origin's signed promise never
    to decrypt it (``abandonment``) when the origin gave one."""

    KIND: ClassVar[str] = "refusal"
    query_id: str
    analyst: str
    purpose: str
    reason: str
    abandonment: Abandonment | None = None

    def to_body(self) -> Json:
        body: Json = {
            "query_id": self.query_id,
            "analyst": self.analyst,
            "purpose": self.purpose,
            "reason": self.reason,
        }
        if self.abandonment is not None:
            body["abandonment"] = self.abandonment.to_json()
        return body

    @classmethod
    def from_body(cls, body: object) -> Self:
        texts = ("query_id", "analyst", "purpose", "reason")
        b = _Body(cls.KIND, body, texts, ("abandonment",))
        query_id, analyst, purpose, reason = (b.text(k) for k in texts)
        abandonment = None
        if b.has("abandonment"):
            raw = b.text_map("abandonment")
            try:
                abandonment = Abandonment.from_json(query_id, raw)
            except InvalidProof as exc:
                raise InvalidRequest(f"a refusal event's abandonment: {exc}") from None
            if abandonment.to_json() != raw:
                raise InvalidRequest("a refusal event's abandonment is not in canonical form")
        return cls(query_id, analyst, purpose, reason, abandonment)


@dataclass(frozen=True, slots=True)
class QueryAborted(TypedEvent):
    KIND: ClassVar[str] = "query_aborted"
    query_id: str
    reason: str

    def to_body(self) -> Json:
        return {"query_id": self.query_id, "reason": self.reason}

    @classmethod
    def from_body(cls, body: object) -> Self:
        b = _Body(cls.KIND, body, ("query_id", "reason"))
        return cls(b.text("query_id"), b.text("reason"))


# -- any event ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event of a kind this version does not know, kept as its raw body."""

    kind: str
    body: Mapping[str, Any]

    def to_body(self) -> Json:
        return dict(self.body)


Event = (
    CeremonyHeld
    | EpochStarted
    | EpochLinked
    | EpochAborted
    | ProjectProposed
    | ProjectApproved
    | ProjectRevoked
    | QueryAnnounced
    | TableReleased
    | QueryRefused
    | QueryAborted
)
EVENT_TYPES: tuple[type[Event], ...] = (
    CeremonyHeld,
    EpochStarted,
    EpochLinked,
    EpochAborted,
    ProjectProposed,
    ProjectApproved,
    ProjectRevoked,
    QueryAnnounced,
    TableReleased,
    QueryRefused,
    QueryAborted,
)
_BY_KIND: dict[str, type[Event]] = {t.KIND: t for t in EVENT_TYPES}
KINDS: tuple[str, ...] = tuple(_BY_KIND)


def parse_event(kind: str, body: Mapping[str, Any]) -> Event | UnknownEvent:
    """The typed event of ``kind``; an ``UnknownEvent`` for a kind not in ``KINDS``.

    Raises ``InvalidRequest`` for a known kind whose body is malformed.
    """
    event_type = _BY_KIND.get(kind)
    if event_type is None:
        return UnknownEvent(kind, body)
    return event_type.from_body(body)
