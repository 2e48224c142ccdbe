"""The coordinator's SQLite tables, and the steps that bring a file to the current version."""

from __future__ import annotations

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    party TEXT PRIMARY KEY, identity BLOB NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ceremonies (
    ceremony_id TEXT PRIMARY KEY, parties TEXT NOT NULL, confirmed INTEGER NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ceremony_envelopes (
    ceremony_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
    PRIMARY KEY (ceremony_id, sender, recipient));
CREATE TABLE IF NOT EXISTS ceremony_commitments (
    ceremony_id TEXT NOT NULL, party TEXT NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (ceremony_id, party));
CREATE TABLE IF NOT EXISTS epochs (
    epoch_id TEXT PRIMARY KEY, ceremony_id TEXT NOT NULL, threshold REAL NOT NULL,
    schema_fingerprint TEXT NOT NULL, clusters INTEGER NOT NULL, created_at TEXT NOT NULL,
    quality TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS epoch_parties (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, records INTEGER NOT NULL,
    commitment BLOB NOT NULL, PRIMARY KEY (epoch_id, party));
CREATE TABLE IF NOT EXISTS encodings (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, position INTEGER NOT NULL,
    token BLOB NOT NULL, clk BLOB NOT NULL, household BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, position));
CREATE TABLE IF NOT EXISTS resolved_households (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL, household BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE TABLE IF NOT EXISTS duplicates (
    epoch_id TEXT NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL, primary_token BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE TABLE IF NOT EXISTS links (
    epoch_id TEXT NOT NULL, cluster INTEGER NOT NULL, party TEXT NOT NULL, token BLOB NOT NULL,
    PRIMARY KEY (epoch_id, party, token));
CREATE INDEX IF NOT EXISTS links_by_cluster ON links (epoch_id, cluster);
CREATE TABLE IF NOT EXISTS pair_links (
    epoch_id TEXT NOT NULL, left_party TEXT NOT NULL, right_party TEXT NOT NULL,
    links INTEGER NOT NULL, PRIMARY KEY (epoch_id, left_party, right_party));
CREATE TABLE IF NOT EXISTS score_histograms (
    epoch_id TEXT NOT NULL, left_party TEXT NOT NULL, right_party TEXT NOT NULL,
    histogram TEXT NOT NULL, PRIMARY KEY (epoch_id, left_party, right_party));
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY, epoch_id TEXT NOT NULL, analyst TEXT NOT NULL,
    purpose TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY, doc TEXT NOT NULL, approvals TEXT NOT NULL DEFAULT '{}',
    revoked INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    query_id TEXT PRIMARY KEY, release TEXT NOT NULL, created_at TEXT NOT NULL);
"""


# Each entry takes the schema one version further (headcount.db.migrate); append,
# never edit, once released.
SCHEMA_STEPS: tuple[str, ...] = (_SCHEMA,)
