"""Queries, their released tables, and research projects in the coordinator's store."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from coordinator.store.tables import Tables, _now
from headcount.errors import InvalidRequest, UnknownJob


class QueryTables(Tables):
    """Queries and their releases, and research projects."""

    def save_query(
        self, query_id: str, epoch_id: str, analyst: str, purpose: str, spec: dict[str, Any]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    query_id,
                    epoch_id,
                    analyst,
                    purpose,
                    json.dumps(spec, sort_keys=True),
                    "running",
                    _now(),
                ),
            )

    def finish_query(self, query_id: str, status: str, release: dict[str, Any] | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE queries SET status = ? WHERE query_id = ?", (status, query_id))
            if release is not None:
                db.execute(
                    "INSERT INTO releases VALUES (?, ?, ?)",
                    (query_id, json.dumps(release, sort_keys=True), _now()),
                )

    def running_queries(self) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT query_id FROM queries WHERE status = 'running'").fetchall()
        return [str(r[0]) for r in rows]

    def query_status(self, query_id: str) -> str:
        with self._tx() as db:
            row = db.execute(
                "SELECT status FROM queries WHERE query_id = ?", (query_id,)
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no query {query_id}")
        return str(row[0])

    def charged_specs_with_dates(self) -> list[tuple[dict[str, Any], date]]:
        """Specs of every query that was (or may have been) charged, with its UTC day.

        A refused query never reached a node, so it charged nothing."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT spec, created_at FROM queries"
                " WHERE status IN ('released', 'running', 'failed', 'aborted')"
            ).fetchall()
        return [(json.loads(r[0]), datetime.fromisoformat(r[1]).date()) for r in rows]

    # -- projects --------------------------------------------------------------------
    def add_project(self, project_id: str, doc: dict[str, Any]) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM projects WHERE project_id = ?", (project_id,)).fetchone():
                raise InvalidRequest(f"project {project_id} already exists")
            db.execute(
                "INSERT INTO projects (project_id, doc, created_at) VALUES (?, ?, ?)",
                (project_id, json.dumps(doc, sort_keys=True), _now()),
            )

    def project(self, project_id: str) -> tuple[dict[str, Any], dict[str, str], bool]:
        """(document, {party: approval signature hex}, revoked); UnknownJob if absent."""
        with self._tx() as db:
            row = db.execute(
                "SELECT doc, approvals, revoked FROM projects WHERE project_id = ?", (project_id,)
            ).fetchone()
        if row is None:
            raise UnknownJob(f"no project {project_id!r}; propose it first")
        return json.loads(row[0]), json.loads(row[1]), bool(row[2])

    def set_approval(self, project_id: str, party: str, signature_hex: str) -> None:
        with self._tx() as db:
            (raw,) = db.execute(
                "SELECT approvals FROM projects WHERE project_id = ?", (project_id,)
            ).fetchone()
            approvals = json.loads(raw)
            approvals[party] = signature_hex
            db.execute(
                "UPDATE projects SET approvals = ? WHERE project_id = ?",
                (json.dumps(approvals, sort_keys=True), project_id),
            )

    def revoke_project(self, project_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE projects SET revoked = 1 WHERE project_id = ?", (project_id,))

    def project_ids(self) -> list[str]:
        with self._tx() as db:
            return [r[0] for r in db.execute("SELECT project_id FROM projects ORDER BY created_at")]

    def query_count(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
