"""The lookup that filtered reads use, and the append's guessed head.

Appends leave the lookup alone; filtered reads index the tail once it is long, and
otherwise combine the lookup with a scan of the unindexed tail: results must not depend on
where the lookup ends. The append starts from the head its connection last wrote; the
trigger must catch every stale guess.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from appliance.audit import lookup, query
from appliance.audit import verify as verify_module
from appliance.audit.events import Actor, Event
from appliance.audit.query import EventFilter
from appliance.audit.verify import verify_trail
from appliance.context import Appliance
from appliance.services import audit as audit_service

ACTORS = [Actor("ira", "Ira Tech", "it"), Actor("dana", "Dana Admin", "admin"),
          Actor("ada", "Ada Auditor", "auditor")]
ACTIONS = ["media.scan", "update.approve", "update.install", "auth.login"]
N = lookup.BATCH + 300  # one batch in the lookup, 300-odd events in the tail


@pytest.fixture
def busy(appliance: Appliance, clock) -> Appliance:
    with appliance.transaction():
        for i in range(N):
            if i % 100 == 0:
                clock.advance(minutes=1)
            appliance.trail.append(Event(
                ACTIONS[i % len(ACTIONS)], ACTORS[i % len(ACTORS)], target_type="bundle",
                target_id=f"b{i % 7}", details={"i": i}))
        assert lookup.catch_up(appliance.conn, lookup.BATCH) == lookup.BATCH
    return appliance


def _brute(app: Appliance, flt: EventFilter) -> list[int]:
    """The filter applied to every stored body in Python: what the lookup must agree with."""
    out = []
    for seq, body in app.conn.execute("SELECT seq, body FROM audit_events ORDER BY seq"):
        d = json.loads(body)
        if flt.since and d["ts"] < flt.since or flt.until and d["ts"] >= flt.until:
            continue
        if flt.actor and d["actor"]["username"] != flt.actor:
            continue
        if flt.action and not (d["action"].startswith(flt.action[:-1])
                               if flt.action.endswith("*") else d["action"] == flt.action):
            continue
        if flt.target_type and d["target"]["type"] != flt.target_type:
            continue
        if flt.target_id and d["target"]["id"] != flt.target_id:
            continue
        out.append(seq)
    return out


FILTERS = [EventFilter(actor="dana"), EventFilter(action="update.*"),
           EventFilter(target_type="bundle", target_id="b3", actor="ira"),
           EventFilter(since="around the batch's end"),
           EventFilter(action="auth.login", target_id="b2")]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in vars(f).items() if v))
def test_filtered_reads_match_the_bodies_across_lookup_and_tail(busy: Appliance,
                                                                flt: EventFilter) -> None:
    indexed = busy.conn.execute("SELECT MAX(seq) FROM audit_lookup").fetchone()[0]
    head = busy.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    assert lookup.BATCH <= indexed < head  # both parts are exercised
    if flt.since == "around the batch's end":
        ts = lambda seq: busy.conn.execute(  # noqa: E731
            "SELECT ts FROM audit_view WHERE seq = ?", (seq,)).fetchone()[0]
        flt = EventFilter(since=ts(indexed - 150), until=ts(indexed + 150))
    expected = _brute(busy, flt)
    assert expected and any(s > indexed for s in expected) and any(s <= indexed
                                                                     for s in expected)
    assert list(query.seqs(busy.conn, flt)) == expected
    assert query.count(busy.conn, flt) == len(expected)
    assert [e.seq for e in query.events(busy.conn, flt, batch=37)] == expected
    newest_first = query.page(busy.conn, flt, limit=25, descending=True)
    assert [e.seq for e in newest_first] == expected[::-1][:25]
    middle = expected[len(expected) // 2]
    after = query.page(busy.conn, flt, after_seq=middle, limit=10)
    assert [e.seq for e in after] == [s for s in expected if s > middle][:10]


def test_appends_leave_the_lookup_alone(appliance: Appliance) -> None:
    before = appliance.conn.execute("SELECT COUNT(*) FROM audit_lookup").fetchone()[0]
    for i in range(lookup.BATCH + 10):
        _append(appliance, f"n{i}")
    assert appliance.conn.execute("SELECT COUNT(*) FROM audit_lookup").fetchone()[0] == before
    assert lookup.unindexed(appliance.conn) >= lookup.BATCH + 10


def test_a_filtered_read_indexes_a_long_tail_in_chunks(appliance: Appliance, clock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the tail reaches BATCH events, the next filtered read indexes all of it, from
    the stored bodies (so events any connection appended), CHUNK events a transaction."""
    monkeypatch.setattr(lookup, "CHUNK", 300)
    other = Appliance.open(appliance.layout.root, clock=clock)
    try:
        for i in range(lookup.BATCH + 10):
            _append(appliance if i % 5 else other, f"n{i}")
        head = appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
        commits: list[str] = []
        other.conn.set_trace_callback(lambda sql: sql == "COMMIT" and commits.append(sql))
        flt = EventFilter(action="test.event")
        assert list(query.seqs(other.conn, flt)) == _brute(appliance, flt)
        other.conn.set_trace_callback(None)
        count, top = appliance.conn.execute(
            "SELECT COUNT(*), MAX(seq) FROM audit_lookup").fetchone()
        assert top == head and count == head and lookup.unindexed(appliance.conn) == 0
        assert len(commits) == -(-head // 300)
        assert lookup.first_mismatch(appliance.conn) is None
    finally:
        other.close()


def test_a_filtered_read_while_another_process_holds_the_write_lock_scans_the_tail(
        appliance: Appliance) -> None:
    """Another connection holds the write lock (an import recording its rows, say) when a
    filtered read finds a long tail: the read waits WAIT_MS for it, not the 30 s busy
    timeout, then scans the tail; the answers are the same, and the connection's own
    busy timeout is as it was."""
    import time

    for i in range(lookup.BATCH + 10):
        _append(appliance, f"n{i}")
    holder = sqlite3.connect(appliance.layout.db, isolation_level=None)
    reader = Appliance.open(appliance.layout.root)
    try:
        holder.execute("BEGIN IMMEDIATE")
        flt = EventFilter(action="test.event")
        started = time.monotonic()
        assert list(query.seqs(reader.conn, flt)) == _brute(appliance, flt)
        assert time.monotonic() - started < 5  # not the 30 s busy timeout
        assert lookup.unindexed(reader.conn) >= lookup.BATCH + 10  # nothing was written
        assert reader.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        holder.execute("ROLLBACK")
        assert list(query.seqs(reader.conn, flt)) == _brute(appliance, flt)
        assert lookup.unindexed(reader.conn) == 0  # indexed once the lock was free
    finally:
        holder.close()
        reader.close()


def test_the_index_service_brings_the_lookup_up_to_date(appliance: Appliance,
                                                         admin_session) -> None:
    for i in range(lookup.BATCH + 10):
        _append(appliance, f"n{i}")
    left = lookup.unindexed(appliance.conn)
    assert audit_service.index(appliance, admin_session) == left >= lookup.BATCH + 10
    assert lookup.unindexed(appliance.conn) == 0 and lookup.first_mismatch(appliance.conn) is None


def test_a_short_tail_is_scanned_not_indexed(busy: Appliance) -> None:
    indexed = busy.conn.execute("SELECT MAX(seq) FROM audit_lookup").fetchone()[0]
    assert query.count(busy.conn, EventFilter(actor="dana")) > 0
    assert busy.conn.execute("SELECT MAX(seq) FROM audit_lookup").fetchone()[0] == indexed


def test_a_read_only_reader_gets_the_same_answers_from_the_tail(appliance: Appliance) -> None:
    """Indexing is best effort: a reader that cannot write scans the whole tail instead."""
    for i in range(lookup.BATCH + 10):
        _append(appliance, f"n{i}")
    reader = sqlite3.connect(f"file:{appliance.layout.db}?mode=ro", uri=True,
                             isolation_level=None)
    try:
        flt = EventFilter(action="test.event")
        assert list(query.seqs(reader, flt)) == _brute(appliance, flt)
        assert lookup.unindexed(reader) >= lookup.BATCH + 10  # nothing was written
    finally:
        reader.close()


def test_newest_time_sees_the_tail_and_the_lookup(busy: Appliance, clock) -> None:
    newest = lookup.newest_ts(busy.conn)
    assert newest == max(json.loads(b)["ts"] for (b,) in busy.conn.execute(
        "SELECT body FROM audit_events"))


def _raw(app: Appliance) -> sqlite3.Connection:
    return sqlite3.connect(app.layout.db, isolation_level=None)


@pytest.mark.parametrize(("parallel", "seq"), [(False, 42), (True, 42), (True, 1000)],
                         ids=["in-process", "parallel-main-part", "parallel-worker-part"])
def test_verify_names_an_edited_lookup_row(busy: Appliance, parallel: bool, seq: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if parallel:  # large trails share the lookup check with the Merkle worker process
        monkeypatch.setattr(verify_module, "PARALLEL_MIN", 5)
    conn = _raw(busy)
    conn.execute("DROP TRIGGER audit_lookup_no_update")
    conn.execute("UPDATE audit_lookup SET actor = 'nobody' WHERE seq = ?", (seq,))
    conn.close()
    report = verify_trail(busy.conn, busy.key.public)
    assert not report.ok
    assert "lookup" in report.kinds() and report.first_bad_seq == seq
    assert "trigger-missing" in report.kinds()


def test_verify_names_a_lookup_row_removed_to_hide_an_event(busy: Appliance) -> None:
    conn = _raw(busy)
    conn.execute("DROP TRIGGER audit_lookup_no_delete")
    conn.execute("DELETE FROM audit_lookup WHERE seq = 77")
    conn.close()
    assert 77 not in query.seqs(busy.conn, EventFilter(target_type="bundle"))
    report = verify_trail(busy.conn, busy.key.public)
    assert [f.seq for f in report.findings if f.kind == "lookup"] == [77]


def test_lookup_rows_are_append_only(busy: Appliance) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        busy.conn.execute("UPDATE audit_lookup SET actor = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        busy.conn.execute("DELETE FROM audit_lookup WHERE seq = 1")


def _append(app: Appliance, note: str) -> None:
    with app.transaction():
        app.trail.append(Event("test.event", ACTORS[0], details={"note": note}))


def test_a_stale_head_guess_after_a_rollback_is_caught_and_retried(appliance: Appliance
                                                                   ) -> None:
    _append(appliance, "before")
    with pytest.raises(RuntimeError), appliance.transaction():
        appliance.trail.append(Event("test.event", ACTORS[0], details={"note": "undone"}))
        raise RuntimeError("the change failed: its event goes with it")
    _append(appliance, "after")  # the guess says head+2; the trigger refuses; retried
    notes = [json.loads(b)["details"].get("note") for (b,) in appliance.conn.execute(
        "SELECT body FROM audit_events ORDER BY seq")]
    assert notes[-2:] == ["before", "after"] and "undone" not in notes
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_two_connections_interleaving_keep_one_chain(appliance: Appliance, clock) -> None:
    other = Appliance.open(appliance.layout.root, clock=clock)
    try:
        for i in range(30):
            _append(appliance if i % 3 else other, f"n{i}")
        report = verify_trail(appliance.conn, appliance.key.public)
        assert report.ok, report.findings
        notes = [json.loads(b)["details"].get("note") for (b,) in appliance.conn.execute(
            "SELECT body FROM audit_events ORDER BY seq")]
        assert notes[-30:] == [f"n{i}" for i in range(30)]
    finally:
        other.close()


def test_lookup_rows_of_odd_values_match_their_bodies(appliance: Appliance) -> None:
    """A target id that is not a string is stored as the body has it, not as Python had it."""
    with appliance.transaction():
        for i in range(lookup.BATCH):
            appliance.trail.append(Event("test.odd", ACTORS[0], target_type="number",
                                         target_id=i if i % 2 else float(i)))  # type: ignore[arg-type]
    lookup.refresh(appliance.conn)
    assert appliance.conn.execute("SELECT COUNT(*) FROM audit_lookup").fetchone()[0] \
        == appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    assert lookup.first_mismatch(appliance.conn) is None
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_a_value_holding_nul_indexed_as_sqlite_reads_it_is_no_finding(
        appliance: Appliance, admin_session) -> None:
    """A failed login's typed name, or any target id, may hold NUL; SQLite's JSON functions
    stop there, so the lookup holds the text before it, as filtered reads compare it. A
    clean trail holding one must verify, while an edited row beside it is still found."""
    with appliance.transaction():
        appliance.trail.append(Event("test.nul", Actor("i\x00ra", "Ira", "it"), "fi\x00le",
                                     "a\x00b"))
        for i in range(lookup.BATCH):
            appliance.trail.append(Event("test.event", ACTORS[0], "file", f"f{i}"))
    lookup.refresh(appliance.conn)
    assert lookup.unindexed(appliance.conn) == 0
    report = audit_service.verify(appliance, admin_session)
    assert report.ok, report.findings
    conn = _raw(appliance)
    conn.execute("DROP TRIGGER audit_lookup_no_update")
    conn.execute("UPDATE audit_lookup SET target_id = 'f0' WHERE seq = (SELECT MAX(seq) "
                 "FROM audit_lookup)")
    conn.close()
    head = appliance.conn.execute("SELECT MAX(seq) FROM audit_lookup").fetchone()[0]
    assert lookup.first_mismatch(appliance.conn) == head


def test_an_appliance_from_before_the_lookup_migrates_in_place(
        tmp_path, clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration drops the generated columns and their indexes without rewriting a row
    or losing a trigger, and fills the lookup from the stored bodies."""
    from appliance import db
    from appliance.schema import AUDIT_TRIGGERS, MIGRATIONS
    from appliance.services.setup import init_appliance
    from tests.conftest import FAST

    monkeypatch.setattr(db, "MIGRATIONS", MIGRATIONS[:5])  # the schema before the lookup
    old = init_appliance(tmp_path / "home", "alice", "Alice Adams", "correct horse battery",
                         clock=clock, settings=FAST, terminal="t")
    for i in range(300):
        _append(old, f"before-{i}")
    rows = old.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events").fetchall()
    assert "actor" in {r[1] for r in old.conn.execute("PRAGMA table_xinfo(audit_events)")}
    old.close()
    monkeypatch.setattr(db, "MIGRATIONS", MIGRATIONS)

    app = Appliance.open(tmp_path / "home", clock=clock)
    try:
        columns = [r[1] for r in app.conn.execute("PRAGMA table_xinfo(audit_events)")]
        assert columns == ["seq", "prev_hash", "hash", "body"]
        assert app.conn.execute("SELECT seq, prev_hash, hash, body FROM audit_events"
                                ).fetchall() == rows
        triggers = {r[0] for r in app.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert set(AUDIT_TRIGGERS) <= triggers
        assert app.conn.execute("SELECT COUNT(*) FROM audit_lookup").fetchone()[0] == len(rows)
        assert [e.seq for e in query.events(app.conn, EventFilter(action="test.event"))] \
            == [r[0] for r in rows if b'"test.event"' in r[3].encode()]
        _append(app, "after")
        assert verify_trail(app.conn, app.key.public).ok
    finally:
        app.close()
