"""The coordinator's side of the audit log: append signed events and keep every
node's replica up to date."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from coordinator.nodes import NodeClients, each_settled
from headcount.domain.audit import AuditLog
from headcount.domain.events import Event
from headcount.errors import ConfigError

log = logging.getLogger(__name__)


def load_audit_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the audit key must be an Ed25519 private key")
    return key


class AuditSync:
    """Appends to the coordinator's audit log and pushes each event to the nodes."""

    def __init__(self, audit: AuditLog, nodes: NodeClients, parties: Sequence[str]) -> None:
        self.audit, self.nodes, self.parties = audit, nodes, tuple(parties)

    def sync(self, party: str) -> int:
        """Bring ``party``'s replica up to date; returns its next seq."""

        node = self.nodes.node(party)
        head = node.sync_audit()
        missing = self.audit.events(since=head.next_seq)
        for start in range(0, len(missing), 500):
            head = node.sync_audit(missing[start : start + 500])
        return head.next_seq

    def log(self, event: Event, *, required: Sequence[str] = ()) -> None:
        """Append a signed event and push it to every node's replica.

        Nodes in ``required`` must acknowledge it (they refuse to take part in
        unannounced work anyway); a failure to reach any other node is logged
        and repaired at its next sync.
        """
        self.audit.log(event)
        results = each_settled(self.parties, self.sync)
        for party, outcome in results.items():
            if isinstance(outcome, BaseException):
                if party in required:
                    raise outcome
                log.warning("audit replica of %s not updated: %s", party, outcome)
