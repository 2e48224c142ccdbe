"""Five Safes "safe projects": what a query must cite before any department takes part.

An analyst proposes a project (title, public-interest purpose, departments,
expiry). Each department's data steward approves it by signing the project
document with the department's own certificate key (ECDSA P-256), so the
coordinator cannot forge an approval. Approvals, proposals and revocations go
into the signed audit log; every node checks its own signed approval in its
replica before it takes part in a query.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import load_pem_x509_certificate

from headcount.errors import InvalidProof, InvalidRequest

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{2,63}$")
DECISIONS = ("approve", "revoke")
MAX_TITLE_CHARS = 200
MAX_PURPOSE_CHARS = 2000
# More departments than any federation has; the coordinator then names the unknown ones.
MAX_PROJECT_PARTIES = 64


def check_project_id(project_id: str) -> None:
    """Refuse (InvalidRequest) an id no project can have, before it is looked up."""
    if not _ID.fullmatch(project_id):
        raise InvalidRequest("a project id is 3-64 characters of a-z, 0-9, '-' and '_'")


@dataclass(frozen=True, slots=True)
class ProjectDoc:
    project_id: str
    title: str
    purpose: str
    analyst: str
    parties: tuple[str, ...]
    expires: dt.date

    def __post_init__(self) -> None:
        check_project_id(self.project_id)
        if len(self.title.strip()) < 5:
            raise InvalidRequest("give the project a title")
        if len(self.title) > MAX_TITLE_CHARS:
            raise InvalidRequest(f"a project title is at most {MAX_TITLE_CHARS} characters")
        if len(self.purpose.strip()) < 20:
            raise InvalidRequest(
                "state the project's public-interest purpose (20 characters or more)"
            )
        if len(self.purpose) > MAX_PURPOSE_CHARS:
            raise InvalidRequest(f"a project purpose is at most {MAX_PURPOSE_CHARS} characters")
        if len(self.parties) > MAX_PROJECT_PARTIES:
            raise InvalidRequest(f"a project names at most {MAX_PROJECT_PARTIES} departments")
        if not self.parties or len(set(self.parties)) != len(self.parties):
            raise InvalidRequest("name the departments whose data the project uses, once each")

    def to_json(self) -> dict[str, object]:
        return {
            "project_id": self.project_id,
            "title": self.title,
            "purpose": self.purpose,
            "analyst": self.analyst,
            "parties": sorted(self.parties),
            "expires": self.expires.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProjectDoc:
        return cls(
            str(data["project_id"]),
            str(data["title"]),
            str(data["purpose"]),
            str(data["analyst"]),
            tuple(str(p) for p in data["parties"]),  # type: ignore[attr-defined]
            dt.date.fromisoformat(str(data["expires"])),
        )

    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProjectProposal:
    """A project as an analyst proposes it. Checked only when the coordinator
    makes it a ``ProjectDoc`` in the proposer's name (``doc``), so every
    refusal is the coordinator's."""

    project_id: str
    title: str
    purpose: str
    parties: tuple[str, ...]
    expires: dt.date

    def doc(self, analyst: str) -> ProjectDoc:
        """The project document in ``analyst``'s name; InvalidRequest if malformed."""
        return ProjectDoc(
            self.project_id, self.title, self.purpose, analyst, self.parties, self.expires
        )


@dataclass(frozen=True, slots=True)
class ProjectDecision:
    """A steward's approval or an operator's or steward's revocation of a project."""

    project_id: str
    # ECDSA-SHA256 by the steward's party key over ``decision_payload``; empty
    # from an operator, who signs nothing.
    signature: bytes = b""


def decision_payload(doc: ProjectDoc, decision: str, party: str) -> bytes:
    if decision not in DECISIONS:
        raise InvalidRequest(f"a decision is one of {DECISIONS}")
    return f"headcount/project/v1\x00{decision}\x00{party}\x00{doc.digest()}".encode()


def sign_decision(
    doc: ProjectDoc, decision: str, party: str, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """The steward's signature on ``decision`` about ``doc`` for ``party``."""
    return key.sign(decision_payload(doc, decision, party), ec.ECDSA(hashes.SHA256()))


def verify_decision(
    doc: ProjectDoc, decision: str, party: str, signature: bytes, cert_pem: bytes
) -> None:
    """Raise InvalidProof unless ``signature`` is ``party``'s, by that certificate."""
    key = load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidProof("a party certificate carries an EC key")
    try:
        key.verify(signature, decision_payload(doc, decision, party), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidProof(
            f"the {decision} signature for project {doc.project_id} is not {party}'s"
        ) from None
