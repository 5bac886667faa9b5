"""Every table of the appliance database, as an ordered list of migrations.

State and the audit trail live in one file so that a change and its audit event commit
in one transaction. Append a migration; never edit one that has shipped, and never run
schema-rewriting helpers (sqlite-utils `transform`) on the audit tables: they drop triggers.
"""

from __future__ import annotations

AUDIT = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The audit trail. `body` holds the canonical JSON bytes that are hashed; every other
-- column is derived from it, so a column can never disagree with what the chain covers.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    body TEXT NOT NULL,
    ts TEXT GENERATED ALWAYS AS (json_extract(body, '$.ts')) VIRTUAL,
    actor TEXT GENERATED ALWAYS AS (json_extract(body, '$.actor.username')) VIRTUAL,
    action TEXT GENERATED ALWAYS AS (json_extract(body, '$.action')) VIRTUAL,
    target_type TEXT GENERATED ALWAYS AS (json_extract(body, '$.target.type')) VIRTUAL,
    target_id TEXT GENERATED ALWAYS AS (json_extract(body, '$.target.id')) VIRTUAL,
    outcome TEXT GENERATED ALWAYS AS (json_extract(body, '$.outcome')) VIRTUAL
);
CREATE INDEX audit_events_ts ON audit_events(ts);
CREATE INDEX audit_events_actor ON audit_events(actor, seq);
CREATE INDEX audit_events_action ON audit_events(action, seq);
CREATE INDEX audit_events_target ON audit_events(target_type, target_id, seq);

CREATE TRIGGER audit_events_continue_head BEFORE INSERT ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit: sequence does not continue the head')
    WHERE NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_events);
    SELECT RAISE(ABORT, 'audit: previous hash does not continue the head')
    WHERE NEW.prev_hash IS NOT COALESCE(
        (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), zeroblob(32));
END;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit: the trail is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit: the trail is append-only');
END;

-- Signed checkpoints: tree size, head hash and RFC 6962 Merkle root, signed by the
-- appliance key. `frontier` (the perfect-subtree roots) is unsigned but must fold to
-- the signed root, so incremental verification can resume from it.
CREATE TABLE audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tree_size INTEGER NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit: checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit: checkpoints are append-only');
END;
"""

IDENTITY = """
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    password_changed_at TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
-- Accounts are disabled, never deleted, so a username is never reused (11.100, 11.300(a)).
CREATE TRIGGER users_no_delete BEFORE DELETE ON users
BEGIN
    SELECT RAISE(ABORT, 'users are disabled, never deleted');
END;
CREATE TRIGGER users_no_rename BEFORE UPDATE OF username ON users
BEGIN
    SELECT RAISE(ABORT, 'usernames never change');
END;
"""

MIGRATIONS: list[str] = [AUDIT, IDENTITY]

AUDIT_TRIGGERS = (
    "audit_events_continue_head",
    "audit_events_no_update",
    "audit_events_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
)
