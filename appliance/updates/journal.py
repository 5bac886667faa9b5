"""The install journal: which install or rollback is under way and how far it got.

Rows change only inside the transactions that also record the step's audit event, so the
journal and the trail never disagree. At most one row is open (a unique partial index).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

# In order. Recovery completes an operation only from HEALTHY; before that it undoes.
STARTED, LAID_OUT, SWITCHED, RESTARTED, HEALTHY, FAILED = (
    "started", "laid_out", "switched", "restarted", "healthy", "failed")


@dataclass(frozen=True)
class JournalEntry:
    id: int
    op: str
    bundle_id: int
    from_bundle_id: int | None
    release_path: str
    previous_target: str | None
    profile: dict[str, Any]
    step: str
    open: bool
    outcome: str | None
    details: dict[str, Any]
    started_at: str
    updated_at: str
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLS = ("id, op, bundle_id, from_bundle_id, release_path, previous_target, profile, step, "
         "open, outcome, details, started_at, updated_at, finished_at")


def _entry(row: tuple) -> JournalEntry:
    v = list(row)
    v[6] = json.loads(v[6])
    v[8] = bool(v[8])
    v[10] = json.loads(v[10])
    return JournalEntry(*v)


def open_entry(conn: sqlite3.Connection) -> JournalEntry | None:
    row = conn.execute(f"SELECT {_COLS} FROM install_journal WHERE open = 1").fetchone()
    return _entry(row) if row else None


def get(conn: sqlite3.Connection, entry_id: int) -> JournalEntry:
    return _entry(conn.execute(f"SELECT {_COLS} FROM install_journal WHERE id = ?",
                               (entry_id,)).fetchone())


def recent(conn: sqlite3.Connection, limit: int = 10) -> list[JournalEntry]:
    rows = conn.execute(f"SELECT {_COLS} FROM install_journal ORDER BY id DESC LIMIT ?",
                        (limit,)).fetchall()
    return [_entry(r) for r in rows]


def create(conn: sqlite3.Connection, op: str, bundle_id: int, from_bundle_id: int | None,
           release_path: str, previous_target: str | None, profile: dict[str, Any],
           ts: str) -> int:
    cur = conn.execute(
        "INSERT INTO install_journal (op, bundle_id, from_bundle_id, release_path, "
        "previous_target, profile, step, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
        "?, ?)", (op, bundle_id, from_bundle_id, release_path, previous_target,
                  json.dumps(profile, sort_keys=True), STARTED, ts, ts))
    return int(cur.lastrowid)


def set_step(conn: sqlite3.Connection, entry_id: int, step: str, ts: str,
             details: dict[str, Any] | None = None) -> None:
    if details:
        old = json.loads(conn.execute("SELECT details FROM install_journal WHERE id = ?",
                                      (entry_id,)).fetchone()[0])
        old.update(details)
        conn.execute("UPDATE install_journal SET details = ? WHERE id = ?",
                     (json.dumps(old, sort_keys=True), entry_id))
    conn.execute("UPDATE install_journal SET step = ?, updated_at = ? WHERE id = ? AND open = 1",
                 (step, ts, entry_id))


def close(conn: sqlite3.Connection, entry_id: int, outcome: str, ts: str) -> None:
    cur = conn.execute("UPDATE install_journal SET open = 0, outcome = ?, finished_at = ?, "
                       "updated_at = ? WHERE id = ? AND open = 1", (outcome, ts, ts, entry_id))
    assert cur.rowcount == 1, "journal entry closed twice"
