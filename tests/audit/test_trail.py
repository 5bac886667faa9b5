"""The audit trail's write path: one transaction with the change, gapless, fail closed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import db
from appliance.audit import export
from appliance.audit.checkpoint import all_checkpoints
from appliance.audit.events import Actor, Event
from appliance.audit.merkle import Frontier, merkle_root
from appliance.audit.trail import chain_sha256
from appliance.audit.verify import verify_trail
from appliance.canonical import canonical_bytes
from appliance.errors import AuditFailure
from appliance.identity.users import get_user
from appliance.services import audit as audit_service
from appliance.services import users

ACTOR = Actor("bob", "Bob Builder", "it")


def _append(app, n: int = 1, **kw) -> None:
    for _ in range(n):
        with app.transaction():
            app.trail.append(Event("test.event", ACTOR, **kw))


def test_sequence_is_gapless_and_time_is_the_servers(appliance, clock) -> None:
    _append(appliance, 5)
    rows = appliance.conn.execute("SELECT seq, ts FROM audit_view ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1][1] == clock.t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{clock.t.microsecond//1000:03d}Z"
    assert all(ts.endswith("Z") and len(ts) == 24 for _, ts in rows)


def test_stored_body_is_canonical_and_hash_covers_prev_and_body(appliance) -> None:
    _append(appliance, 2, details={"b": 1, "a": "é"}, reason="why")
    rows = appliance.conn.execute(
        "SELECT prev_hash, hash, body FROM audit_events ORDER BY seq").fetchall()
    for (prev, h, body), before in zip(rows, [bytes(32)] + [r[1] for r in rows], strict=False):
        assert prev == before
        assert h == hashlib.sha256(prev + body.encode()).digest()
        assert canonical_bytes(json.loads(body)) == body.encode()
    last = json.loads(rows[-1][2])
    assert last["actor"] == {"username": "bob", "name": "Bob Builder", "role": "it"}
    assert last["reason"] == "why"
    # the append binds the hashed bytes; SQLite stores them as TEXT, byte for byte
    with appliance.transaction():
        appended = appliance.trail.append(Event("test.event", ACTOR, reason="é"))
    kind, stored = appliance.conn.execute("SELECT typeof(body), CAST(body AS BLOB) FROM "
                                          "audit_events WHERE seq = ?", (appended.seq,)).fetchone()
    assert kind == "text" and stored == appended.body
    assert appended.hash == hashlib.sha256(appended.prev_hash + appended.body).digest()
    assert appended.stored() == export.stored_event(appliance.conn, appended.seq)


def test_chain_hash_is_sha256_and_openssls_under_fips() -> None:
    """The append hashes with CPython's own SHA-256 (cheaper cold) unless OpenSSL runs in
    FIPS mode; either way the digest is OpenSSL's, which verify uses."""
    data = bytes(range(256)) * 3
    for fips in (False, True):
        assert chain_sha256(fips)(data).digest() == hashlib.sha256(data).digest()
    assert chain_sha256(True) is hashlib.sha256


def test_append_outside_a_transaction_is_refused(appliance) -> None:
    with pytest.raises(AuditFailure):
        appliance.trail.append(Event("test.event", ACTOR))


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_change_to_a_record_without_its_reason_is_not_recorded(appliance, reason) -> None:
    """Old values mean a record changed: the event must say why, or nothing is written and
    the transaction (with the change it recorded) rolls back. New records need none."""
    head = appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    with pytest.raises(ValueError, match="test.edit: a change to a record needs its reason"):
        with appliance.transaction():
            appliance.conn.execute("INSERT INTO meta (key, value) VALUES ('probe', 'x')")
            appliance.trail.append(Event("test.edit", ACTOR, "thing", "t1", reason=reason,
                                         old={"v": 1}, new={"v": 2}))
    assert appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == head
    assert appliance.conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() \
        is None
    with appliance.transaction():
        appliance.trail.append(Event("test.create", ACTOR, "thing", "t2", new={"v": 1}))
        appliance.trail.append(Event("test.edit", ACTOR, "thing", "t2", reason="typo",
                                     old={"v": 1}, new={"v": 2}))
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_triggers_refuse_update_delete_and_non_continuing_rows(appliance) -> None:
    conn = appliance.conn
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_events SET body = body WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_events WHERE seq = 1")
    head, h = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    first = conn.execute("SELECT hash FROM audit_events WHERE seq = 1").fetchone()[0]
    insert = "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?, ?, ?, '{}')"
    for seq, prev in [(head + 2, h), (head + 1, bytes(32)), (1, bytes(32)), (2, first),
                      (head, h)]:
        with pytest.raises(sqlite3.IntegrityError, match="does not continue the head"):
            conn.execute(insert, (seq, prev, bytes(32)))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_checkpoints")


def test_an_empty_trail_takes_only_the_genesis_event(tmp_path) -> None:
    conn = db.connect(tmp_path / "fresh.db", create=True)
    db.migrate(conn)
    insert = "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?, ?, ?, '{}')"
    for seq, prev in [(2, bytes(32)), (1, b"\x01" * 32), (0, bytes(32))]:
        with pytest.raises(sqlite3.IntegrityError, match="does not continue the head"):
            conn.execute(insert, (seq, prev, bytes(32)))
    conn.execute(insert, (1, bytes(32), b"\x02" * 32))
    conn.execute(insert, (2, b"\x02" * 32, b"\x03" * 32))
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 2


def test_service_whose_audit_write_fails_does_not_take_effect(appliance, admin_session) -> None:
    """Fail closed: sabotage the audit insert, and the account is not created either."""
    conn = sqlite3.connect(appliance.layout.db)
    conn.execute("CREATE TRIGGER sabotage BEFORE INSERT ON audit_events "
                 "WHEN json_extract(NEW.body, '$.action') = 'user.create' "
                 "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    conn.close()
    with pytest.raises(AuditFailure, match="disk says no"):
        users.add_user(appliance, admin_session, "carol", "Carol Chen", ["ml"],
                       "a long enough password", "new hire")
    assert get_user(appliance.conn, "carol") is None


def test_clock_going_backwards_is_recorded_and_reported(appliance, clock) -> None:
    _append(appliance)
    clock.advance(minutes=-10)
    _append(appliance)
    body = json.loads(appliance.conn.execute(
        "SELECT body FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert "clock earlier" in body["clock_warning"]
    report = verify_trail(appliance.conn, appliance.key.public)
    assert report.ok
    assert [w.seq for w in report.warnings] == [body["seq"]]


def test_checkpoints_every_n_events_after_minutes_and_after_signatures(appliance, clock) -> None:
    def sizes():
        return [cp.tree_size for cp in all_checkpoints(appliance.conn)]

    start = sizes()
    assert start  # the first event of a trail is checkpointed
    _append(appliance, 1000)
    assert any(s % 1000 == 0 for s in sizes()[len(start):])
    n = len(sizes())
    clock.advance(minutes=6)
    _append(appliance)
    assert len(sizes()) == n + 1
    with appliance.transaction():
        appliance.trail.append(Event("update.approve", ACTOR, signature={
            "username": "bob", "name": "Bob Builder", "meaning": "approved"}))
    head = appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    assert sizes()[-1] == head
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_events_left_unsealed_past_the_minutes_are_sealed_with_no_append(appliance, clock
                                                                         ) -> None:
    """Appends test the time policy; the last events of a quiet appliance are sealed by
    `seal_overdue` (the open console calls it every minute), and only once they are due."""
    def sizes():
        return [cp.tree_size for cp in all_checkpoints(appliance.conn)]

    _append(appliance, 3)
    head = appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    before = sizes()
    assert before[-1] < head
    clock.advance(minutes=2)
    assert audit_service.seal_overdue(appliance) is False and sizes() == before
    clock.advance(minutes=4)
    assert audit_service.seal_overdue(appliance) is True
    assert sizes() == [*before, head]
    assert json.loads(all_checkpoints(appliance.conn)[-1].text)["reason"] == "policy"
    clock.advance(minutes=10)
    assert audit_service.seal_overdue(appliance) is False and sizes() == [*before, head]
    assert appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0] == head
    assert verify_trail(appliance.conn, appliance.key.public, incremental=True).ok


def test_an_overdue_seal_gives_way_to_another_writer_within_half_a_second(appliance, clock
                                                                         ) -> None:
    """The console's timer must not hang for the 30 s busy timeout behind a long writer:
    it gives up (the writer's own append tests the policy) and the connection keeps its
    usual patience afterwards."""
    _append(appliance, 2)
    clock.advance(minutes=6)
    other = db.connect(appliance.layout.db)
    other.execute("BEGIN IMMEDIATE")
    try:
        start = time.perf_counter()
        with pytest.raises(AuditFailure, match="could not start a database transaction"):
            audit_service.seal_overdue(appliance, wait_ms=200)
        assert 0.15 < time.perf_counter() - start < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert appliance.conn.execute("PRAGMA busy_timeout").fetchone()[0] == db.BUSY_TIMEOUT_MS
    assert audit_service.seal_overdue(appliance) is True


def test_incremental_verify_starts_at_the_newest_checkpoint(appliance) -> None:
    _append(appliance, 1100)
    report = verify_trail(appliance.conn, appliance.key.public, incremental=True)
    assert report.ok
    assert report.start_seq == 1001
    assert report.events_checked == appliance.conn.execute(
        "SELECT MAX(seq) FROM audit_events").fetchone()[0] - 1000


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=140), st.integers(0, 140),
       st.lists(st.integers(0, 140), max_size=4))
def test_merkle_frontier_matches_rfc6962_reference(leaves: list[bytes], split: int,
                                                   cuts: list[int]) -> None:
    f = Frontier()
    for leaf in leaves[:split]:
        f.push(leaf)
    # what checkpoints do, each from wherever the last one stopped
    ends = sorted({split, *(c for c in cuts if c > split), len(leaves)})
    for start, end in zip(ends, ends[1:], strict=False):
        f.extend(leaves[start:end])
    assert f.size == len(leaves)
    assert f.root() == merkle_root(leaves)
    again = Frontier.from_bytes(f.size, f.to_bytes())
    assert again.root() == f.root()
