"""A node's part in the key ceremony: check the roster, contribute sealed
randomness, open the others' envelopes and derive the linkage secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from headcount.config import FederationConfig
from headcount.crypto import ceremony, paillier
from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.errors import InvalidProof, InvalidRequest
from party_node.ids import check_id
from party_node.keys import NodeKeys
from party_node.store import NodeStore

log = logging.getLogger(__name__)


class CeremonyParticipant:
    def __init__(
        self, federation: FederationConfig, name: str, store: NodeStore, keys: NodeKeys
    ) -> None:
        self.federation, self.name, self.store, self.keys = federation, name, store, keys

    def _check_roster(self, identities: Sequence[Identity]) -> dict[str, Identity]:
        by_party = {i.party: i for i in identities}
        expected = set(self.federation.party_names)
        if set(by_party) != expected or len(by_party) != len(identities):
            raise InvalidRequest(
                f"ceremony roster {sorted(by_party)} is not "
                f"the federation's parties {sorted(expected)}"
            )
        for identity in identities:
            ceremony.verify_identity(identity, self.federation.ca_cert)
        if by_party[self.name] != self.keys.identity:
            raise InvalidProof(f"the roster's identity for {self.name} is not this node's")
        return by_party

    def contribute(
        self, ceremony_id: str, identities: Sequence[Identity]
    ) -> tuple[Commitment, list[Envelope]]:
        check_id("ceremony_id", ceremony_id)
        by_party = self._check_roster(identities)
        self.keys.set_peers(
            [
                paillier.PublicKey.from_bytes(i.paillier_n)
                for name, i in sorted(by_party.items())
                if name != self.name
            ]
        )
        contribution = ceremony.new_contribution()
        roster = json.dumps(
            [
                {
                    "party": i.party,
                    "x25519": i.x25519_public_key.hex(),
                }
                for i in sorted(identities, key=lambda i: i.party)
            ]
        )
        self.store.start_ceremony(ceremony_id, contribution, roster)
        envelopes = [
            ceremony.seal(self.keys.x25519, self.name, peer, ceremony_id, contribution)
            for name, peer in sorted(by_party.items())
            if name != self.name
        ]
        return ceremony.commit(ceremony_id, self.name, contribution), envelopes

    def finish(
        self, ceremony_id: str, envelopes: Sequence[Envelope], commitments: Sequence[Commitment]
    ) -> bytes:
        """Open the envelopes, check commitments, derive and store the secret; return its tag."""
        contribution, roster_json, secret = self.store.ceremony(ceremony_id)
        if secret is not None:
            raise InvalidRequest(f"ceremony {ceremony_id} is already finished at {self.name}")
        roster = {r["party"]: bytes.fromhex(r["x25519"]) for r in json.loads(roster_json)}
        committed = {c.party: c.digest for c in commitments}
        if set(committed) != set(roster) or len(committed) != len(commitments):
            raise InvalidProof("commitments must come from exactly the ceremony's parties")
        if committed[self.name] != ceremony.commit(ceremony_id, self.name, contribution).digest:
            raise InvalidProof(f"the relayed commitment for {self.name} is not the one it made")
        contributions = {self.name: contribution}
        for env in envelopes:
            if (
                env.ceremony_id != ceremony_id
                or env.sender not in roster
                or env.sender == self.name
            ):
                raise InvalidProof(f"unexpected envelope from {env.sender!r}")
            if env.sender in contributions:
                raise InvalidProof(f"two envelopes from {env.sender}")
            sender = Identity(env.sender, roster[env.sender], b"", b"", b"")
            value = ceremony.open_envelope(self.keys.x25519, self.name, sender, env)
            if ceremony.commit(ceremony_id, env.sender, value).digest != committed[env.sender]:
                raise InvalidProof(f"{env.sender}'s contribution does not match its commitment")
            contributions[env.sender] = value
        missing = set(roster) - set(contributions)
        if missing:
            raise InvalidProof(f"no envelope from {sorted(missing)}")
        secret = ceremony.derive_secret(ceremony_id, contributions)
        self.store.finish_ceremony(ceremony_id, secret)
        log.info("%s: ceremony %s finished with %d parties", self.name, ceremony_id, len(roster))
        return ceremony.confirmation_tag(secret, ceremony_id)
