"""Signed public identities and key ceremonies in the coordinator's store."""

from __future__ import annotations

import json
from collections.abc import Sequence

from coordinator.store.tables import Tables, _now
from headcount.errors import FailedPrecondition


class CeremonyTables(Tables):
    """Identities, ceremonies, their sealed envelopes and commitments."""

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
