"""Each attack on the raw SQLite file is detected and named (issue: foundation).

Triggers only stop honest mistakes; these tests play an attacker who edits the file
directly, and check that the hash chain, the signed checkpoints and an anchor catch it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from appliance.audit.checkpoint import read_anchor
from appliance.audit.events import Actor, Event
from appliance.audit.verify import verify_trail
from appliance.canonical import canonical_bytes
from appliance.context import Appliance
from appliance.keys import SigningKey
from appliance.services import audit as audit_service
from appliance.services import auth
from appliance.services.setup import init_appliance
from appliance.settings import AuditPolicy, PasswordPolicy, Settings
from tests.audit.rewrite import rechain, resign_checkpoints
from tests.conftest import ADMIN, PASSWORD

SETTINGS = Settings(password=PasswordPolicy(scrypt_n=2**10, max_age_days=0),
                    audit=AuditPolicy(checkpoint_every_events=10))
ACTOR = Actor("bob", "Bob Builder", "it")
EVENTS = 40


@pytest.fixture
def trail_home(home: Path, clock) -> Path:
    """A closed appliance whose trail holds setup events plus EVENTS payload events."""
    app = init_appliance(home, ADMIN, "Alice Adams", PASSWORD, clock=clock, settings=SETTINGS)
    for i in range(EVENTS):
        with app.transaction():
            app.trail.append(Event("test.payload", ACTOR, "thing", f"t{i}",
                                   details={"note": f"payload-{i:04d}"}, reason="routine"))
    app.close()
    return home


def _verify(home: Path, anchor: Path | None = None):
    app = Appliance.open(home)
    try:
        return verify_trail(app.conn, app.key.public, read_anchor(anchor) if anchor else None)
    finally:
        app.close()


def _raw(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "appliance.db", isolation_level=None)


def _seq_of(conn: sqlite3.Connection, note: str) -> int:
    return conn.execute("SELECT seq FROM audit_events WHERE body LIKE ?",
                        (f'%"{note}"%',)).fetchone()[0]


def _triggers(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE type='trigger' AND tbl_name LIKE 'audit_%'")]


def _drop_triggers(conn: sqlite3.Connection) -> list[str]:
    saved = _triggers(conn)
    for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name LIKE 'audit_%'"
    ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return saved


def _restore_triggers(conn: sqlite3.Connection, saved: list[str]) -> None:
    for sql in saved:
        conn.execute(sql)


def test_clean_trail_verifies(trail_home: Path) -> None:
    report = _verify(trail_home)
    assert report.ok, report.findings
    assert report.events_checked == EVENTS + 2
    assert report.checkpoints_checked >= 4


def test_edited_field_in_raw_file_bytes(trail_home: Path) -> None:
    """An edit of the file's bytes (no SQL at all) breaks the event's hash."""
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0013")
    conn.close()
    db = trail_home / "appliance.db"
    raw = db.read_bytes()
    assert raw.count(b"payload-0013") == 1
    db.write_bytes(raw.replace(b"payload-0013", b"payload-9913"))
    report = _verify(trail_home)
    assert not report.ok
    assert report.first_bad_seq == seq
    assert report.findings[0].kind == "edited"


def test_deleted_row(trail_home: Path) -> None:
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0020")
    saved = _drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE seq = ?", (seq,))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.findings[0].kind == "deleted"
    assert report.first_bad_seq == seq
    # later checkpoints no longer match either: the Merkle tree lost a leaf
    assert report.kinds() <= {"deleted", "checkpoint-mismatch"}


def test_inserted_forged_row(trail_home: Path) -> None:
    """A forged event slipped in with a correct link to its predecessor and renumbering."""
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0021")
    head = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    saved = _drop_triggers(conn)
    for s in range(head, seq - 1, -1):
        conn.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (s + 1, s))
    prev = conn.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq - 1,)).fetchone()[0]
    forged = Event("update.approve", Actor("mallory", "Mallory", "admin"), "bundle", "evil",
                   reason="forged").body(seq, "2026-01-15T09:00:00.500Z", None)
    body = canonical_bytes(forged).decode()
    conn.execute("INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?, ?, ?, ?)",
                 (seq, prev, hashlib.sha256(prev + body.encode()).digest(), body))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.findings[0].kind == "inserted"
    assert report.first_bad_seq == seq


def test_two_rows_swapped(trail_home: Path) -> None:
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0030")
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_events SET seq = -1 WHERE seq = ?", (seq,))
    conn.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (seq, seq + 1))
    conn.execute("UPDATE audit_events SET seq = ? WHERE seq = -1", (seq + 1,))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.findings[0].kind == "reordered"
    assert report.first_bad_seq == seq
    assert "inserted" not in report.kinds()


def test_dropped_trigger_then_edit(trail_home: Path) -> None:
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0005")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_events SET body = body WHERE seq = ?", (seq,))
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET body = replace(body, 'payload-0005', 'payload-7777') "
                 "WHERE seq = ?", (seq,))
    conn.close()
    report = _verify(trail_home)
    assert {"edited", "trigger-missing"} <= report.kinds()
    assert report.first_bad_seq == seq


def test_rewritten_chain_resigned_with_foreign_key(trail_home: Path) -> None:
    """The attacker edits an event, recomputes every hash after it, and re-signs every
    checkpoint with a key of their own: only the checkpoint signatures can tell."""
    foreign = SigningKey.generate()
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0007")
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_events SET body = replace(body, 'payload-0007', 'payload-6666') "
                 "WHERE seq = ?", (seq,))
    rechain(conn)
    resign_checkpoints(conn, foreign)
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert "edited" not in report.kinds()  # the chain itself is consistent again
    assert report.kinds() == {"checkpoint-foreign-key"}


def _forge_newest_checkpoint_signature(home: Path) -> None:
    """Re-sign the newest checkpoint with a foreign key, keeping the appliance's key id."""
    foreign = SigningKey.generate()
    conn = _raw(home)
    saved = _drop_triggers(conn)
    cid, text = conn.execute(
        "SELECT id, body FROM audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    conn.execute("UPDATE audit_checkpoints SET signature = ? WHERE id = ?",
                 (foreign.sign(text.encode()), cid))
    _restore_triggers(conn, saved)
    conn.close()


def test_checkpoint_signature_forged_under_appliance_key_id(trail_home: Path) -> None:
    _forge_newest_checkpoint_signature(trail_home)
    assert _verify(trail_home).kinds() == {"checkpoint-signature"}


def _anchor(home: Path, to: Path) -> Path:
    app = Appliance.open(home)
    try:
        return audit_service.anchor(app, auth.login(app, ADMIN, PASSWORD), to)
    finally:
        app.close()


def test_truncated_tail_against_anchor(trail_home: Path, tmp_path: Path) -> None:
    anchor = _anchor(trail_home, tmp_path / "anchor.json")
    conn = _raw(trail_home)
    cut = _seq_of(conn, "payload-0035")
    saved = _drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE seq >= ?", (cut,))
    conn.execute("DELETE FROM audit_checkpoints WHERE tree_size >= ?", (cut,))
    _restore_triggers(conn, saved)
    conn.close()
    # A clean prefix, but sqlite_sequence remembers the checkpoints that were issued.
    report = _verify(trail_home)
    assert report.kinds() == {"checkpoint-deleted"}
    report = _verify(trail_home, anchor)
    assert report.kinds() == {"truncated", "checkpoint-deleted"}
    assert [f.seq for f in report.findings if f.kind == "truncated"] == [cut]


def test_whole_file_replaced_by_older_copy(trail_home: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(trail_home / "appliance.db", old)
    app = Appliance.open(trail_home)
    with app.transaction():
        app.trail.append(Event("test.payload", ACTOR, "thing", "late", reason="later work"))
    app.close()
    anchor = _anchor(trail_home, tmp_path)
    shutil.copy(old, trail_home / "appliance.db")
    assert _verify(trail_home).ok  # the old copy is self-consistent
    report = _verify(trail_home, anchor)
    assert report.kinds() == {"rollback"}


def test_anchor_from_another_history(trail_home: Path, tmp_path: Path) -> None:
    """An anchor whose head differs from the stored event at its size: history rewritten."""
    anchor = _anchor(trail_home, tmp_path / "a.json")
    conn = _raw(trail_home)
    size = read_anchor(anchor).tree_size
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_events SET hash = zeroblob(32) WHERE seq = ?", (size,))
    _restore_triggers(conn, saved)
    conn.close()
    assert "anchor-mismatch" in _verify(trail_home, anchor).kinds()


def test_another_appliances_anchor_is_said_plainly(trail_home: Path, tmp_path: Path,
                                                   clock) -> None:
    """An auditor who picked the wrong file reads that, alone, not "history was rewritten";
    it still fails, as a database swapped for another appliance's would."""
    other = init_appliance(tmp_path / "other", ADMIN, "Alice Adams", PASSWORD, clock=clock,
                           settings=SETTINGS)
    other_id = other.appliance_id
    other.close()
    report = _verify(trail_home, _anchor(tmp_path / "other", tmp_path / "other.json"))
    assert [f.kind for f in report.findings] == ["foreign-anchor"]
    ours = Appliance.open(trail_home)
    assert f"appliance {other_id}, this database of appliance {ours.appliance_id}" in \
        report.findings[0].message
    ours.close()


def test_this_appliances_anchor_signed_with_another_key_is_a_key_mismatch(
        trail_home: Path, tmp_path: Path) -> None:
    anchor = _anchor(trail_home, tmp_path / "a.json")
    _write_anchor_doc(anchor, resign=True)
    assert "key-mismatch" in _verify(trail_home, anchor).kinds()


def test_anchor_file_tampering_is_refused(trail_home: Path, tmp_path: Path) -> None:
    from appliance.errors import InvalidInput
    anchor = _anchor(trail_home, tmp_path / "a.json")
    anchor.write_text(anchor.read_text().replace('"tree_size": ', '"tree_size": 1'))
    with pytest.raises(InvalidInput):
        read_anchor(anchor)


def test_large_trail_path_hashes_merkle_in_a_worker_and_still_catches_rewrites(
        trail_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big trails hash the Merkle tree in a second process; it must agree and catch edits."""
    from appliance.audit import verify as verify_module
    monkeypatch.setattr(verify_module, "PARALLEL_MIN", 5)
    clean = _verify(trail_home)
    assert clean.ok and clean.checkpoints_checked >= 4
    conn = _raw(trail_home)
    saved = _drop_triggers(conn)
    # rewrite one leaf's body AND its hash-chain consistently from there on: only Merkle
    # roots and head hashes at the signed checkpoints can tell
    seq = _seq_of(conn, "payload-0002")
    conn.execute("UPDATE audit_events SET body = replace(body, 'payload-0002', 'payload-0x02') "
                 "WHERE seq = ?", (seq,))
    last = conn.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq - 1,)).fetchone()[0]
    for s, body in conn.execute("SELECT seq, body FROM audit_events WHERE seq >= ? ORDER BY seq",
                                (seq,)).fetchall():
        h = hashlib.sha256(last + body.encode()).digest()
        conn.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (last, h, s))
        last = h
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"checkpoint-mismatch"}


def test_incremental_verify_reports_a_forged_newest_checkpoint(trail_home: Path) -> None:
    """Incremental mode checks only recent checkpoints, but a bad one is never skipped."""
    _forge_newest_checkpoint_signature(trail_home)
    app = Appliance.open(trail_home)
    try:
        report = verify_trail(app.conn, app.key.public, incremental=True)
    finally:
        app.close()
    assert report.kinds() == {"checkpoint-signature"}
    assert report.start_seq > 1  # resumed from the newest good checkpoint


# Rows whose columns no longer hold what the appliance writes: each is a finding at its
# event, never a traceback (a decoding error, a JSON parse, bytes + str).
@pytest.mark.parametrize("change", [
    "body = CAST(CAST(body AS BLOB) || X'ff' AS TEXT)",  # not UTF-8
    "body = 'not json'",
    "body = '[1, 2]'",                                     # JSON, but not an object
    "body = CAST(body AS BLOB)",                           # the same bytes, as a BLOB
    "hash = lower(hex(hash)), prev_hash = lower(hex(prev_hash))",
    "prev_hash = CAST(prev_hash AS TEXT)",                 # raw hash bytes as TEXT
    "hash = CAST(hash AS TEXT)",
], ids=["not-utf8", "not-json", "json-array", "blob-body", "hex-hashes", "text-prev",
        "text-hash"])
def test_columns_of_the_wrong_kind_are_edits(trail_home: Path, change: str) -> None:
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0017")
    saved = _drop_triggers(conn)
    conn.execute(f"UPDATE audit_events SET {change} WHERE seq = ?", (seq,))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.findings[0].kind == "edited"
    assert report.first_bad_seq == seq
    assert report.kinds() <= {"edited", "checkpoint-mismatch"}


def test_a_lookup_value_stored_as_blob_is_a_lookup_finding(trail_home: Path) -> None:
    from appliance.audit import lookup
    from appliance.db import transaction
    conn = _raw(trail_home)
    with transaction(conn):
        assert lookup.catch_up(conn) == EVENTS + 2
    seq = _seq_of(conn, "payload-0011")
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_lookup SET ts = CAST(ts AS BLOB) WHERE seq = ?", (seq,))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"lookup"}
    assert report.first_bad_seq == seq


def test_prev_hash_column_edited_alone(trail_home: Path) -> None:
    """The hash chain recomputes from the previous hash, so only a comparison of the stored
    link column shows this; exports carry that column to the auditor."""
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0019")
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_events SET prev_hash = zeroblob(32) WHERE seq = ?", (seq,))
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"edited"}
    assert report.first_bad_seq == seq
    assert "prev_hash" in report.findings[0].message


@pytest.mark.parametrize("name, body", [
    ("audit_events_no_update", "AFTER UPDATE ON audit_events BEGIN SELECT 1; END"),
    ("audit_events_continue_head", "BEFORE INSERT ON audit_events BEGIN SELECT 1; END"),
    ("audit_checkpoints_no_delete",
     "BEFORE DELETE ON audit_checkpoints BEGIN SELECT 1 WHERE 0; END"),
])
def test_protective_trigger_replaced_under_its_name(trail_home: Path, name: str,
                                                    body: str) -> None:
    conn = _raw(trail_home)
    conn.execute(f"DROP TRIGGER {name}")
    conn.execute(f"CREATE TRIGGER {name} {body}")
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"trigger-altered"}
    assert name in report.findings[0].message


def test_a_trigger_differing_only_in_whitespace_is_the_same(trail_home: Path) -> None:
    conn = _raw(trail_home)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = "
                       "'audit_events_no_delete'").fetchone()[0]
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.execute(sql.replace("\n", "\n\n  "))
    conn.close()
    assert _verify(trail_home).ok


def test_a_database_from_older_migrations_keeps_its_own_trigger_definitions(
        tmp_path: Path) -> None:
    """A backup made before the head-check trigger was redefined holds the first definition:
    that is no tampering, and neither definition may stand in for the other."""
    from appliance.db import split_script
    from appliance.schema import AUDIT_HEAD_CHECK, MIGRATIONS
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for number, ddl in enumerate(MIGRATIONS[:MIGRATIONS.index(AUDIT_HEAD_CHECK)], start=1):
        for statement in split_script(ddl):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    key = SigningKey.generate()
    assert verify_trail(conn, key.public).ok
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")  # claims the newer schema
    assert verify_trail(conn, key.public).kinds() == {"trigger-altered"}
    conn.close()


def _delete_newest_checkpoints_and_rewrite_after(home: Path, keep: int) -> int:
    """Keep the first `keep` checkpoints, edit an event after the last one kept and rehash
    the chain from there: the rewrite itself leaves no broken link. Returns its seq."""
    conn = _raw(home)
    covered = conn.execute("SELECT tree_size FROM audit_checkpoints WHERE id = ?",
                           (keep,)).fetchone()[0]
    saved = _drop_triggers(conn)
    conn.execute("DELETE FROM audit_checkpoints WHERE id > ?", (keep,))
    seq = covered + 2
    conn.execute("UPDATE audit_events SET body = replace(body, 'routine', 'rewrite') "
                 "WHERE seq = ?", (seq,))
    last = conn.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq - 1,)).fetchone()[0]
    for s, body in conn.execute("SELECT seq, body FROM audit_events WHERE seq >= ? "
                                "ORDER BY seq", (seq,)).fetchall():
        h = hashlib.sha256(last + body.encode()).digest()
        conn.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?",
                     (last, h, s))
        last = h
    _restore_triggers(conn, saved)
    conn.close()
    return covered + 1


def test_deleted_newest_checkpoints_and_rewritten_tail(trail_home: Path) -> None:
    first_uncovered = _delete_newest_checkpoints_and_rewrite_after(trail_home, keep=2)
    report = _verify(trail_home)
    assert report.kinds() == {"checkpoint-deleted"}
    assert report.first_bad_seq == first_uncovered


def test_a_deleted_checkpoint_in_the_middle(trail_home: Path) -> None:
    conn = _raw(trail_home)
    covered = conn.execute("SELECT tree_size FROM audit_checkpoints WHERE id = 2").fetchone()[0]
    saved = _drop_triggers(conn)
    conn.execute("DELETE FROM audit_checkpoints WHERE id = 3")
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"checkpoint-deleted"}
    assert report.first_bad_seq == covered + 1


SIGNATURE = {"username": "alice", "name": "Alice Adams", "meaning": "approved",
             "ts": "2026-01-15T09:00:00.000Z"}


def _append_signed(home: Path, then: int = 0) -> int:
    """A signed event (its transaction writes a checkpoint) and `then` unsigned ones."""
    app = Appliance.open(home)
    with app.transaction():
        signed = app.trail.append(Event("update.approve", ACTOR, "bundle", "b1",
                                        reason="approve", signature=SIGNATURE)).seq
    for i in range(then):
        with app.transaction():
            app.trail.append(Event("test.payload", ACTOR, "thing", f"late{i}", reason="x"))
    app.close()
    return signed


def test_a_trail_ending_in_a_signature_verifies(trail_home: Path) -> None:
    _append_signed(trail_home)
    assert _verify(trail_home).ok


def test_signature_like_text_is_not_a_signature(trail_home: Path) -> None:
    """Reasons and nested keys may spell "signature": only the event's own member counts."""
    app = Appliance.open(trail_home)
    with app.transaction():
        app.trail.append(Event("test.payload", ACTOR, "thing", "t", reason='"signature":{}',
                               details={"signature": "x", 'a"signature': 1}))
    app.close()
    assert _verify(trail_home).ok


def test_signed_event_whose_checkpoint_was_deleted_without_trace(trail_home: Path) -> None:
    """Even with sqlite_sequence put back, a signature no checkpoint covers shows that
    checkpoints were removed."""
    signed = _append_signed(trail_home, then=3)
    conn = _raw(trail_home)
    saved = _drop_triggers(conn)
    conn.execute("DELETE FROM audit_checkpoints WHERE tree_size >= ?", (signed,))
    conn.execute("UPDATE sqlite_sequence SET seq = (SELECT MAX(id) FROM audit_checkpoints) "
                 "WHERE name = 'audit_checkpoints'")
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert report.kinds() == {"checkpoint-missing"}
    assert report.first_bad_seq == signed


def _write_anchor_doc(anchor: Path, resign: bool = False, **changes) -> None:
    """Change fields of an anchor file; `resign`: signed again, with a key of its own, so
    that only the fields' shapes are wrong."""
    import json

    from appliance.keys import public_pem
    doc = json.loads(anchor.read_text())
    doc.update(changes)
    if resign:
        key = SigningKey.generate()
        doc["public_key_pem"] = public_pem(key.public).decode()
        doc["signature"] = key.sign(doc["checkpoint_text"].encode())
    anchor.write_text(json.dumps(doc))


@pytest.mark.parametrize("changes", [
    {"public_key_pem": "garbage"},
    {"public_key_pem": 7},
    {"checkpoint_text": 5},
    {"signature": None},
    {"checkpoint": {}, "checkpoint_text": "{}", "resign": True},
    {"checkpoint": [], "checkpoint_text": "[]", "resign": True},
    {"checkpoint": {"tree_size": "3", "head_hash": "00"},
     "checkpoint_text": '{"head_hash":"00","tree_size":"3"}', "resign": True},
    {"checkpoint_text": "[" * 100_000 + "]" * 100_000},
], ids=["garbage-key", "int-key", "int-text", "null-signature", "signed-empty-checkpoint",
        "signed-list-checkpoint", "signed-text-size", "text-nested-too-deeply"])
def test_a_malformed_anchor_is_invalid_input(trail_home: Path, tmp_path: Path,
                                             changes: dict) -> None:
    from appliance.errors import InvalidInput
    anchor = _anchor(trail_home, tmp_path / "a.json")
    _write_anchor_doc(anchor, **changes)
    with pytest.raises(InvalidInput, match="anchor"):
        read_anchor(anchor)


def test_cli_verify_with_a_malformed_anchor_is_one_line(trail_home: Path,
                                                       tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    anchor = _anchor(trail_home, tmp_path / "a.json")
    _write_anchor_doc(anchor, public_key_pem="garbage")
    r = subprocess.run([sys.executable, "-m", "appliance", "audit", "verify", "-u", ADMIN,
                        "--password-stdin", "--anchor", str(anchor)], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, APPLIANCE_HOME=str(trail_home)))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: anchor "), r.stderr


@pytest.mark.parametrize("when", ["SELECT seq, prev_hash, hash, body FROM audit_events",
                                  "SELECT seq FROM sqlite_sequence"])
@pytest.mark.parametrize("incremental", [False, True])
def test_a_signature_committed_during_verify_is_no_finding(trail_home: Path, when: str,
                                                           incremental: bool) -> None:
    """Another connection signs (event and checkpoint in one transaction) while verify
    runs, right before the walk or the checkpoint-id check: a clean trail stays clean."""
    reader, writer = Appliance.open(trail_home), Appliance.open(trail_home)
    signed: list[int] = []

    def sign_once(sql: str) -> None:
        if not signed and sql.lstrip().startswith(when):
            with writer.transaction():
                signed.append(writer.trail.append(Event(
                    "update.approve", ACTOR, "bundle", "b@9",
                    signature={"username": "alice", "meaning": "approved"})).seq)

    reader.conn.set_trace_callback(sign_once)
    try:
        report = verify_trail(reader.conn, reader.key.public, incremental=incremental)
    finally:
        reader.conn.set_trace_callback(None)
    assert signed and report.ok, report.findings
    assert report.head_seq == signed[0] - 1  # the snapshot from before the signature
    assert verify_trail(writer.conn, writer.key.public).head_seq == signed[0]
    reader.close()
    writer.close()


@pytest.mark.parametrize("column", ["body", "signature"])
def test_a_checkpoint_column_that_is_not_utf8_is_a_finding(trail_home: Path, column: str) -> None:
    conn = _raw(trail_home)
    saved = _drop_triggers(conn)
    newest = conn.execute("SELECT max(id) FROM audit_checkpoints").fetchone()[0]
    conn.execute(f"UPDATE audit_checkpoints SET {column} = CAST(X'7BFF' AS TEXT) WHERE id = ?",
                 (newest,))
    size = conn.execute("SELECT tree_size FROM audit_checkpoints WHERE id = ?",
                        (newest,)).fetchone()[0]
    _restore_triggers(conn, saved)
    conn.close()
    for incremental in (False, True):
        app = Appliance.open(trail_home)
        try:
            report = verify_trail(app.conn, app.key.public, incremental=incremental)
        finally:
            app.close()
        assert ("checkpoint-signature", size) in {(f.kind, f.seq) for f in report.findings}


@pytest.mark.parametrize("change", ["hash = 7", "hash = zeroblob(31)", "hash = lower(hex(hash))"])
def test_a_damaged_head_refuses_every_append_in_one_line(trail_home: Path, change: str) -> None:
    """Nothing can be chained to a head that is not of the stored form: appends fail
    closed, saying so, instead of with a TypeError."""
    from appliance.errors import IntegrityError
    conn = _raw(trail_home)
    saved = _drop_triggers(conn)
    conn.execute(f"UPDATE audit_events SET {change} WHERE seq = (SELECT max(seq) "
                 "FROM audit_events)")
    head = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    _restore_triggers(conn, saved)
    conn.close()
    app = Appliance.open(trail_home)
    try:
        with pytest.raises(IntegrityError, match=f"the newest audit event \\({head}\\) is "
                                                 "damaged"):
            with app.transaction():
                app.trail.append(Event("test.after", ACTOR, "thing", "x"))
        assert app.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == head
    finally:
        app.close()


def test_an_anchor_file_nested_too_deeply_is_invalid_input(tmp_path: Path) -> None:
    from appliance.errors import InvalidInput
    anchor = tmp_path / "deep.json"
    anchor.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidInput, match="cannot read anchor"):
        read_anchor(anchor)


@pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
def test_a_value_nested_too_deeply_to_parse_is_a_finding(trail_home: Path, table: str) -> None:
    """JSON nested 100,000 deep makes Python's parser raise RecursionError: an edit like
    that is a finding at its place, never a crash of verify."""
    deep = "[" * 100_000 + "]" * 100_000
    conn = _raw(trail_home)
    saved = _drop_triggers(conn)
    if table == "audit_events":
        seq = _seq_of(conn, "payload-0013")
        conn.execute("UPDATE audit_events SET body = ? WHERE seq = ?", (deep, seq))
        expected = ("edited", seq)
    else:
        cid, size = conn.execute("SELECT max(id), max(tree_size) FROM audit_checkpoints"
                                 ).fetchone()
        conn.execute("UPDATE audit_checkpoints SET body = ? WHERE id = ?", (deep, cid))
        expected = ("checkpoint-signature", size)
    _restore_triggers(conn, saved)
    conn.close()
    report = _verify(trail_home)
    assert expected in {(f.kind, f.seq) for f in report.findings}


def test_cli_verify_names_the_kind_found_at_the_first_bad_event(trail_home: Path) -> None:
    """Findings without a place (a removed trigger) are listed first: the error line must
    still pair the first bad sequence number with what was found there."""
    import os
    import subprocess
    import sys
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0013")
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET body = replace(body, 'payload-0013', "
                 "'payload-9913') WHERE seq = ?", (seq,))
    conn.close()
    r = subprocess.run([sys.executable, "-m", "appliance", "audit", "verify", "-u", ADMIN,
                        "--password-stdin"], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, APPLIANCE_HOME=str(trail_home)))
    assert r.returncode == 7
    assert "  trigger-missing: protective trigger audit_events_no_update" in r.stdout
    assert r.stderr.strip().splitlines() == [
        f"error: audit trail verification failed: edited at {seq} "
        "(run `appliance audit verify` and report to the security officer)"]


def test_incremental_verify_with_an_anchor_still_checks_the_history_before_it(
        trail_home: Path, tmp_path: Path) -> None:
    """Root holds the appliance key (a file there): it edits an event before the anchor,
    re-chains up to the anchor's event but leaves that row's stored hash as the anchor has
    it, and re-signs every checkpoint over the edited events. An incremental walk starts
    after the anchor and would never see the broken row; with an anchor it must."""
    anchor = _anchor(trail_home, tmp_path / "anchor.json")
    size = read_anchor(anchor).tree_size
    app = Appliance.open(trail_home)
    try:
        for i in range(25):  # checkpoints every 10 events: the newest lies past the anchor
            with app.transaction():
                app.trail.append(Event("test.payload", ACTOR, "thing", f"later{i}",
                                       reason="routine"))
        key = app.key
    finally:
        app.close()
    conn = _raw(trail_home)
    seq = _seq_of(conn, "payload-0007")
    assert seq < size
    saved = _drop_triggers(conn)
    conn.execute("UPDATE audit_events SET body = replace(body, 'payload-0007', 'payload-6666') "
                 "WHERE seq = ?", (seq,))
    rechain(conn, seq, size)  # the anchor's own event keeps its stored hash
    resign_checkpoints(conn, key)
    _restore_triggers(conn, saved)
    conn.close()
    app = Appliance.open(trail_home)
    try:
        report = verify_trail(app.conn, app.key.public, read_anchor(anchor), incremental=True)
    finally:
        app.close()
    assert not report.ok
    assert "edited" in report.kinds()
