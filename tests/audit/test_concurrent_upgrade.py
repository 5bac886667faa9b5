"""Processes that open the database at once after an upgrade (the console, a CLI command,
a job) apply each new migration once between them: the one that finds it applied under
the write lock moves on, where it ran the DDL again and failed in a traceback."""

from __future__ import annotations

import threading

from appliance import db
from appliance.context import Appliance
from appliance.identity.users import session_epoch
from appliance.schema import MIGRATIONS
from tests.lockgate import WriteLockGate


def test_two_processes_opening_one_migration_behind_migrate_once(appliance) -> None:
    path = appliance.layout.db
    # The database as the release before SESSION_EPOCH left it.
    appliance.conn.execute("ALTER TABLE users DROP COLUMN session_epoch")
    appliance.conn.execute(f"PRAGMA user_version={len(MIGRATIONS) - 1}")
    conns = [db.connect(path) for _ in range(2)]
    errors: list[BaseException] = []

    def open_one(conn) -> None:
        try:
            db.migrate(conn)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    gate = WriteLockGate(appliance.layout.root)
    with gate:  # both read version N-1, then wait to apply migration N
        for conn in conns:
            gate.watch(conn)
        threads = [threading.Thread(target=open_one, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        gate.wait_blocked()
    for t in threads:
        t.join(30)
    for conn in conns:
        conn.close()
    assert errors == []
    with Appliance.open(appliance.layout.root) as app:
        assert app.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert session_epoch(app.conn, "alice") == 0
