"""Tampering with a copy of the audit log: each edit must be detected."""

from __future__ import annotations

import dataclasses
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from headcount.attacks import AttackResult
from headcount.domain.audit import AuditEvent, event_hash, sign_event_hash, verify_chain
from headcount.errors import InvalidProof
from headcount.local import LocalFederation


def _rehash(events: list[AuditEvent], key: Ed25519PrivateKey) -> list[AuditEvent]:
    """Renumber and re-chain, signing with the attacker's own key."""
    out: list[AuditEvent] = []
    prev = "0" * 64
    for seq, e in enumerate(events):
        digest = event_hash(seq, e.kind, e.body, e.at, prev)
        out.append(
            AuditEvent(seq, e.kind, e.body, e.at, prev, digest, sign_event_hash(key, digest))
        )
        prev = digest
    return out


def tampering(fed: LocalFederation) -> AttackResult:
    """Edit, delete, reorder, truncate and forge: detected by chain, signature or head."""
    events = fed.coordinator.coordinator.audit.events()
    verifier = fed.config.audit_verifier
    replica_head = fed.nodes["health"].node.audit.verify()
    rogue = Ed25519PrivateKey.generate()
    body = dict(events[-1].body)
    body["records"] = json.loads(json.dumps(body.get("records", {})))
    edited = [*events[:-1], dataclasses.replace(events[-1], body={**body, "tampered": True})]
    cases = {
        "edit": edited,
        "delete": events[:1] + events[2:],
        "reorder": [events[1], events[0], *events[2:]],
        "forge (re-chained, attacker's key)": _rehash(edited, rogue),
        "truncate": events[:-1],
    }
    detected = 0
    for copy in cases.values():
        try:
            head = verify_chain(copy, verifier)
            # A truncated chain is valid on its own: a replica's head disagrees.
            if head != replica_head:
                detected += 1
        except InvalidProof:
            detected += 1
    return AttackResult(
        "audit-tampering",
        "whoever holds a copy of the log",
        "the log file; not the federation's audit key",
        f"{detected} of {len(cases)} tamperings detected ({', '.join(cases)})",
        1 - detected / len(cases),
        attempts=len(cases),
    )
