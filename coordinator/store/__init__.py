"""The coordinator's state, in one SQLite file.

What is here is exactly what the coordinator holds: signed public identities,
sealed ceremony envelopes and commitments, keyed encodings under per-epoch
random tokens, the linkage graph over tokens, query metadata and released
(protected) tables. No raw identifier, linkage secret or attribute value is
ever written: the privacy tests read this file back to check.

The parts (`ceremonies`, `epochs`, `queries`) each add the methods for their
tables to `CoordinatorStore`; `sql` holds the tables themselves.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.store.ceremonies import CeremonyTables
from coordinator.store.epochs import EpochInfo, EpochTables, PairKey, PairQuality, PartyEncodings
from coordinator.store.queries import QueryTables
from coordinator.store.sql import SCHEMA_STEPS
from headcount.db import create_database

__all__ = [
    "SCHEMA_STEPS",
    "CoordinatorStore",
    "EpochInfo",
    "PairKey",
    "PairQuality",
    "PartyEncodings",
]


class CoordinatorStore(CeremonyTables, EpochTables, QueryTables):
    """The coordinator's state in one SQLite file (created or migrated on open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_database(path, "coordinator", SCHEMA_STEPS)
