"""What every part of the coordinator's store shares: its file and one transaction per call."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from headcount.db import transaction


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Tables:
    """Base of the store's parts: each call opens one transaction on ``path``."""

    path: Path

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)
