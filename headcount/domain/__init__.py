"""The domain floor: query specs, measures, projects, the audit log and its events,
released tables and status values (docs/architecture.md, "Module map")."""
