"""Several processes append at once (CLI, console, jobs): one gapless chain, nothing lost."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from appliance.audit import lookup, query
from appliance.audit.events import Actor, Event
from appliance.audit.query import EventFilter
from appliance.audit.verify import verify_trail
from appliance.context import Appliance

WRITERS = 4
EACH = 2000


def _writer(home: str, n: int, who: str) -> None:
    app = Appliance.open(Path(home))
    actor = Actor(who, who.title(), "it")
    for i in range(n):
        with app.transaction():
            app.trail.append(Event("test.concurrent", actor, "writer", who, details={"i": i}))
    app.close()


def test_four_processes_append_one_gapless_chain(appliance: Appliance) -> None:
    home = str(appliance.layout.root)
    before = appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(home, EACH, f"writer{w}")) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    conn = appliance.conn
    head = conn.execute("SELECT MAX(seq), COUNT(*) FROM audit_events").fetchone()
    assert head == (before + WRITERS * EACH, before + WRITERS * EACH)
    per_writer = dict(conn.execute(
        "SELECT actor, COUNT(*) FROM audit_view WHERE action = 'test.concurrent' "
        "GROUP BY actor").fetchall())
    assert per_writer == {f"writer{w}": EACH for w in range(WRITERS)}
    # each writer's own events keep their order
    for w in range(WRITERS):
        order = [r[0] for r in conn.execute(
            "SELECT json_extract(body, '$.details.i') FROM audit_view WHERE actor = ? "
            "ORDER BY seq", (f"writer{w}",))]
        assert order == list(range(EACH))
    report = verify_trail(conn, appliance.key.public)
    assert report.ok, report.findings  # verify also compares every lookup row with its body
    assert report.events_checked == before + WRITERS * EACH
    # a filtered read indexes the four writers' interleaved events, every one of them
    assert query.count(conn, EventFilter(action="test.concurrent")) == WRITERS * EACH
    assert lookup.unindexed(conn) == 0 and lookup.first_mismatch(conn) is None
