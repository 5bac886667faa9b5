"""Filtered, keyset-paged reads of the trail for views and exports (never OFFSET scans)."""

from __future__ import annotations

import sqlite3
from array import array
from dataclasses import dataclass

from appliance.audit.events import StoredEvent


@dataclass(frozen=True)
class EventFilter:
    since: str | None = None      # ISO UTC, inclusive
    until: str | None = None      # ISO UTC, exclusive
    actor: str | None = None
    action: str | None = None     # exact, or a prefix ending in '*' ("update.*")
    target_type: str | None = None
    target_id: str | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.since:
            clauses.append("ts >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("ts < ?")
            args.append(self.until)
        if self.actor:
            clauses.append("actor = ?")
            args.append(self.actor.lower())
        if self.action:
            if self.action.endswith("*"):
                clauses.append("action >= ? AND action < ?")
                prefix = self.action[:-1]
                args += [prefix, prefix + "\U0010ffff"]
            else:
                clauses.append("action = ?")
                args.append(self.action)
        if self.target_type:
            clauses.append("target_type = ?")
            args.append(self.target_type)
        if self.target_id:
            clauses.append("target_id = ?")
            args.append(self.target_id)
        return (" AND ".join(clauses) or "1"), args

    @property
    def empty(self) -> bool:
        return self == EventFilter()


def page(conn: sqlite3.Connection, flt: EventFilter, after_seq: int = 0, limit: int = 100,
         descending: bool = False) -> list[StoredEvent]:
    where, args = flt.where()
    if descending:
        cond, order = ("seq < ?" if after_seq else "1"), "DESC"
    else:
        cond, order = "seq > ?", "ASC"
    params = ([after_seq] if (after_seq or not descending) else []) + args
    rows = conn.execute(
        f"SELECT seq, prev_hash, hash, body FROM audit_events WHERE {cond} AND {where} "
        f"ORDER BY seq {order} LIMIT ?", (*params, limit)).fetchall()
    return [StoredEvent(*r) for r in rows]


def count(conn: sqlite3.Connection, flt: EventFilter) -> int:
    if flt.empty:
        row = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()
        return row[0] or 0
    where, args = flt.where()
    return conn.execute(f"SELECT COUNT(*) FROM audit_events WHERE {where}", args).fetchone()[0]


def seqs(conn: sqlite3.Connection, flt: EventFilter) -> array:
    """Every matching sequence number, ascending: 8 bytes a match, so a view can map row
    numbers to events and jump anywhere in a filtered trail without loading the events."""
    where, args = flt.where()
    out = array("q")
    cur = conn.execute(f"SELECT seq FROM audit_events WHERE {where} ORDER BY seq", args)
    while rows := cur.fetchmany(50_000):
        out.extend(r[0] for r in rows)
    return out
