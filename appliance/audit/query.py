"""Filtered, keyset-paged reads of the trail for views, exports and services (never OFFSET
scans); filters go through the indexed lookup (appliance/audit/lookup.py), which each
filtered read first brings up to date."""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.audit.events import StoredEvent
from appliance.audit.lookup import SeqRange, matching_seqs, refresh


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


def _where(conn: sqlite3.Connection, flt: EventFilter) -> tuple[str, list[object]]:
    """The filter's SQL; a filter reads through the lookup, so bring that up to date."""
    if not flt.empty:
        refresh(conn)
    return flt.where()


def page(conn: sqlite3.Connection, flt: EventFilter, after_seq: int = 0, limit: int = 100,
         descending: bool = False) -> list[StoredEvent]:
    where, args = _where(conn, flt)
    if descending:
        bounds, order = SeqRange(before=after_seq or None), "DESC"
    else:
        bounds, order = SeqRange(after=after_seq), "ASC"
    source, params = matching_seqs(where, args, bounds, limit, descending)
    rows = conn.execute(
        f"SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq IN ({source}) "
        f"ORDER BY seq {order} LIMIT ?", (*params, limit)).fetchall()
    return [StoredEvent(*r) for r in rows]


def count(conn: sqlite3.Connection, flt: EventFilter, upto: int | None = None) -> int:
    if flt.empty and upto is None:
        row = conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()
        return row[0] or 0
    where, args = _where(conn, flt)
    source, params = matching_seqs(where, args, SeqRange(upto=upto))
    return conn.execute(f"SELECT COUNT(*) FROM ({source})", params).fetchone()[0]


def seqs(conn: sqlite3.Connection, flt: EventFilter) -> array:
    """Every matching sequence number, ascending: 8 bytes a match, so a view can map row
    numbers to events and jump anywhere in a filtered trail without loading the events."""
    where, args = _where(conn, flt)
    source, params = matching_seqs(where, args)
    out = array("q")
    cur = conn.execute(f"SELECT seq FROM ({source}) ORDER BY seq", params)
    while rows := cur.fetchmany(50_000):
        out.extend(r[0] for r in rows)
    return out


def events(conn: sqlite3.Connection, flt: EventFilter, after_seq: int = 0,
           batch: int = 500) -> Iterator[StoredEvent]:
    """Every matching event after `after_seq`, oldest first, a page at a time."""
    while found := page(conn, flt, after_seq, batch):
        yield from found
        after_seq = found[-1].seq


def newest(conn: sqlite3.Connection, flt: EventFilter) -> StoredEvent | None:
    """The latest event the filter matches."""
    found = page(conn, flt, limit=1, descending=True)
    return found[0] if found else None
