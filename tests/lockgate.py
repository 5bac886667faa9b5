"""Forcing an interleaving between connections: every one of them has done what it does
before its first write transaction, then they go on together."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from appliance import db
from appliance.home import HomeLayout


class WriteLockGate:
    """Holds the write lock; `wait_blocked` returns once every watched connection is
    waiting for it (its BEGIN IMMEDIATE has started: SQLite traces a statement when it
    begins running, before the busy handler waits)."""

    def __init__(self, home: Path) -> None:
        self.conn = db.connect(HomeLayout(Path(home)).db)
        self.blocked: list[threading.Event] = []

    def __enter__(self) -> WriteLockGate:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def watch(self, conn: sqlite3.Connection) -> None:
        seen = threading.Event()
        self.blocked.append(seen)
        conn.set_trace_callback(
            lambda sql: seen.set() if sql.startswith("BEGIN IMMEDIATE") else None)

    def wait_blocked(self) -> None:
        for seen in self.blocked:
            assert seen.wait(20), "an attempt never reached the write lock"

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()
