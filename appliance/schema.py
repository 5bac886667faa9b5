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
    password_history TEXT NOT NULL DEFAULT '[]',
    password_changed_at TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    signature_ack_at TEXT,
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

-- Failed logins by the name typed, known or not, so lockout never reveals whether a
-- username exists (11.300(d)). Cleared by a successful login or a security officer.
CREATE TABLE login_failures (
    username TEXT NOT NULL,
    ts TEXT NOT NULL
);
CREATE INDEX login_failures_user ON login_failures(username, ts);

-- Training records (11.10(i)): a role that requires training is granted only after one.
CREATE TABLE training (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username),
    role TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    reason TEXT NOT NULL
);

-- Electronic signatures (11.50, 11.70): bound to the SHA-256 of the signed record's
-- canonical content and to the audit event that carries their manifestation.
CREATE TABLE signatures (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    full_name TEXT NOT NULL,
    ts TEXT NOT NULL,
    meaning TEXT NOT NULL,
    reason TEXT NOT NULL,
    record_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    record_digest TEXT NOT NULL,
    audit_seq INTEGER NOT NULL
);
CREATE INDEX signatures_record ON signatures(record_type, record_id);
CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures
BEGIN
    SELECT RAISE(ABORT, 'signatures never change');
END;
CREATE TRIGGER signatures_no_delete BEFORE DELETE ON signatures
BEGIN
    SELECT RAISE(ABORT, 'signatures never change');
END;
"""

BUNDLES = """
-- Trusted TUF metadata (appliance/bundle/trust.py): every version ever trusted, so the root
-- history and the rollback floor survive; the newest version of each role is current.
-- Written only in the transaction that records the import (or trust init) event.
CREATE TABLE trust_metadata (
    role TEXT NOT NULL,
    version INTEGER NOT NULL,
    body BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (role, version)
);
CREATE TRIGGER trust_metadata_no_update BEFORE UPDATE ON trust_metadata
BEGIN
    SELECT RAISE(ABORT, 'trusted metadata is append-only');
END;
CREATE TRIGGER trust_metadata_no_delete BEFORE DELETE ON trust_metadata
BEGIN
    SELECT RAISE(ABORT, 'trusted metadata is append-only');
END;

-- Imported bundles and their lifecycle state (docs: IMPORTED -> ... -> ACTIVE).
-- `digest` is the SHA-256 of the signed bundle description, which binds every component.
CREATE TABLE bundles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('IMPORTED', 'VERIFIED', 'EVALUATED',
        'PENDING_APPROVAL', 'APPROVED', 'INSTALLING', 'ACTIVE', 'REJECTED', 'ROLLED_BACK')),
    description TEXT NOT NULL,
    metadata_version INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    imported_by TEXT NOT NULL,
    state_reason TEXT,
    UNIQUE (name, version)
);
-- One row per component; `files` lists [relpath, sha256, size] for the install step.
CREATE TABLE bundle_components (
    bundle_id INTEGER NOT NULL REFERENCES bundles(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    files TEXT NOT NULL,
    PRIMARY KEY (bundle_id, name)
);
CREATE INDEX bundle_components_digest ON bundle_components(kind, digest);
"""

UPDATES = """
-- Results of the automatic lifecycle checks (verification, evaluation evidence) per bundle.
CREATE TABLE update_checks (
    bundle_id INTEGER NOT NULL REFERENCES bundles(id),
    kind TEXT NOT NULL CHECK (kind IN ('verification', 'evaluation')),
    ok INTEGER NOT NULL,
    result TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    PRIMARY KEY (bundle_id, kind)
);

-- Release directories under releases/<name>/<version>/ (`path` is relative to releases/).
-- Exactly one is `current` (the target of the `current` link) once anything is installed.
CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_id INTEGER NOT NULL REFERENCES bundles(id),
    path TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('current', 'kept', 'removed', 'failed')),
    profile TEXT NOT NULL,
    placement TEXT NOT NULL,
    created_at TEXT NOT NULL,
    activated_at TEXT,
    removed_at TEXT
);
CREATE UNIQUE INDEX releases_one_current ON releases(status) WHERE status = 'current';

-- The install journal: an install or rollback in progress has one open row, so that a
-- process killed half-way is found at the next start and completed or undone.
CREATE TABLE install_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('install', 'rollback')),
    bundle_id INTEGER NOT NULL REFERENCES bundles(id),
    from_bundle_id INTEGER REFERENCES bundles(id),
    release_path TEXT NOT NULL,
    previous_target TEXT,
    profile TEXT NOT NULL,
    step TEXT NOT NULL,
    open INTEGER NOT NULL DEFAULT 1 CHECK (open IN (0, 1)),
    outcome TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE UNIQUE INDEX install_journal_one_open ON install_journal(open) WHERE open = 1;
"""

PROVISION = """
-- Inventory hosts for provisioning (appliance/provision/inventory.py). localhost is built
-- in; a row named localhost overrides it. host_keys are pinned when the host is added.
CREATE TABLE provision_hosts (
    name TEXT PRIMARY KEY,
    connection TEXT NOT NULL CHECK (connection IN ('local', 'ssh')),
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    user TEXT NOT NULL,
    key_file TEXT,
    host_keys TEXT NOT NULL,
    appliance_root TEXT NOT NULL,
    python TEXT NOT NULL,
    vars TEXT NOT NULL DEFAULT '{}',
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL
);

-- One row per playbook run; the audit trail holds its start and its result. `extra_vars`
-- is stored redacted; `owner_pid`/`owner_start` find runs whose process died.
CREATE TABLE provision_runs (
    id TEXT PRIMARY KEY,
    playbook TEXT NOT NULL,
    inventory TEXT NOT NULL,
    inventory_digest TEXT NOT NULL,
    hosts_list TEXT NOT NULL,
    check_mode INTEGER NOT NULL CHECK (check_mode IN (0, 1)),
    extra_vars TEXT NOT NULL,
    limit_hosts TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'successful', 'failed', 'cancelled',
        'timeout', 'error', 'interrupted')),
    started_at TEXT NOT NULL,
    started_by TEXT NOT NULL,
    finished_at TEXT,
    duration_s REAL,
    rc INTEGER,
    host_counts TEXT NOT NULL DEFAULT '{}',
    failure TEXT,
    job_dir TEXT NOT NULL,
    owner_host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_start INTEGER
);
CREATE INDEX provision_runs_started ON provision_runs(started_at);
CREATE INDEX provision_runs_status ON provision_runs(status);
"""

AUDIT_LOOKUP = """
-- Appends are hot, so audit_events keeps only what the chain needs: the generated
-- columns cost every insert a JSON parse and their indexes four index writes. Queries read
-- the same fields through audit_view (computed from the stored body) and audit_lookup, a
-- copy of the filter columns made in batches by appliance/audit/lookup.py and indexed
-- here; reads combine the lookup with a scan of the short unindexed tail, and
-- `audit verify` checks every lookup row against the body it was copied from.
-- Dropping a VIRTUAL column edits only the schema: no row is rewritten, triggers stay.
DROP INDEX audit_events_ts;
DROP INDEX audit_events_actor;
DROP INDEX audit_events_action;
DROP INDEX audit_events_target;
ALTER TABLE audit_events DROP COLUMN ts;
ALTER TABLE audit_events DROP COLUMN actor;
ALTER TABLE audit_events DROP COLUMN action;
ALTER TABLE audit_events DROP COLUMN target_type;
ALTER TABLE audit_events DROP COLUMN target_id;
ALTER TABLE audit_events DROP COLUMN outcome;
CREATE VIEW audit_view AS SELECT seq, prev_hash, hash, body,
    json_extract(body, '$.ts') AS ts,
    json_extract(body, '$.actor.username') AS actor,
    json_extract(body, '$.action') AS action,
    json_extract(body, '$.target.type') AS target_type,
    json_extract(body, '$.target.id') AS target_id,
    json_extract(body, '$.outcome') AS outcome
FROM audit_events;
-- No declared types: each value is kept exactly as json_extract gives it from the body.
CREATE TABLE audit_lookup (
    seq INTEGER PRIMARY KEY,
    ts,
    actor,
    action,
    target_type,
    target_id
);
CREATE INDEX audit_lookup_ts ON audit_lookup(ts);
CREATE INDEX audit_lookup_actor ON audit_lookup(actor, seq);
CREATE INDEX audit_lookup_action ON audit_lookup(action, seq);
CREATE INDEX audit_lookup_target ON audit_lookup(target_type, target_id, seq);
CREATE TRIGGER audit_lookup_no_update BEFORE UPDATE ON audit_lookup
BEGIN
    SELECT RAISE(ABORT, 'audit: the lookup is append-only');
END;
CREATE TRIGGER audit_lookup_no_delete BEFORE DELETE ON audit_lookup
BEGIN
    SELECT RAISE(ABORT, 'audit: the lookup is append-only');
END;
INSERT INTO audit_lookup (seq, ts, actor, action, target_type, target_id)
SELECT seq, ts, actor, action, target_type, target_id FROM audit_view;
"""

# One subquery instead of two: every durable append runs this trigger. The sequence and
# the previous hash must both be the head's (or, on an empty trail, 1 and zeros); the
# primary key still refuses a reused sequence.
AUDIT_HEAD_CHECK = """
DROP TRIGGER audit_events_continue_head;
CREATE TRIGGER audit_events_continue_head BEFORE INSERT ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit: the event does not continue the head (sequence or hash)')
    WHERE (NEW.seq, NEW.prev_hash) IS NOT
          (SELECT seq + 1, hash FROM audit_events ORDER BY seq DESC LIMIT 1)
      AND (NEW.seq IS NOT 1 OR NEW.prev_hash IS NOT zeroblob(32)
           OR EXISTS (SELECT 1 FROM audit_events));
END;
"""

# Sessions end when their account changes under them: a password reset or change, or a
# disable, moves the account to a new epoch, and a session opened in an older one ends at
# its next action (services/access.refresh_roles), even if the account was re-enabled.
SESSION_EPOCH = """
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS: list[str] = [AUDIT, IDENTITY, BUNDLES, UPDATES, PROVISION, AUDIT_LOOKUP,
                         AUDIT_HEAD_CHECK, SESSION_EPOCH]

AUDIT_TRIGGERS = (
    "audit_events_continue_head",
    "audit_events_no_update",
    "audit_events_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "audit_lookup_no_update",
    "audit_lookup_no_delete",
)
