"""The trail's lookup table: each event's filter columns, indexed, filled by its readers.

Indexed columns on audit_events itself would cost every durable append a JSON parse and
four index writes (about as much again as the insert). Appends leave the lookup alone:
the reads that filter (`query`, exports, the clock check) first call `refresh`, which
copies the filter columns of the events not yet indexed into `audit_lookup` once at least
BATCH of them have gathered, in transactions of CHUNK events. Reads take the indexed part
from the lookup and scan only the unindexed tail through `audit_view`, so a filter answers
the same whether or not a refresh has run, or could (a locked or read-only database).
The copies are derived data: `audit verify` compares every row with its body.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance import db
from appliance.errors import AuditFailure

BATCH = 1024  # a shorter unindexed tail is scanned; a longer one is indexed first
CHUNK = 5_000  # events indexed per write transaction (tens of ms: appends barely wait)
# How long a read waits for the write lock to index the tail before it scans it instead:
# appends hold the lock for well under this; an import or an install recording its rows,
# or another reader indexing, may hold it for seconds, and the read must not wait that out.
WAIT_MS = 200

_COLUMNS = "seq, ts, actor, action, target_type, target_id"
_INDEXED_UPTO = "(SELECT COALESCE(MAX(seq), 0) FROM audit_lookup)"


def unindexed(conn: sqlite3.Connection) -> int:
    """How many events the lookup lacks (the tail every filtered read scans)."""
    return conn.execute(
        f"SELECT COALESCE((SELECT MAX(seq) FROM audit_events), 0) - {_INDEXED_UPTO}"
    ).fetchone()[0]


def catch_up(conn: sqlite3.Connection, limit: int | None = None) -> int:
    """Give the lookup a row for each event it lacks, oldest first, at most `limit`;
    inside a write transaction. Returns how many were added."""
    cur = conn.execute(
        f"INSERT INTO audit_lookup ({_COLUMNS}) SELECT {_COLUMNS} FROM audit_view "
        f"WHERE seq > {_INDEXED_UPTO} ORDER BY seq LIMIT ?", (-1 if limit is None else limit,))
    return cur.rowcount


def refresh(conn: sqlite3.Connection) -> int:
    """Index the whole unindexed tail once it has reached BATCH events, CHUNK events a
    transaction; returns how many were indexed. Best effort by design: inside the caller's
    transaction, or when the database is read-only or its write lock is held past WAIT_MS,
    it leaves the tail (or what is left of it) to be scanned."""
    indexed = 0
    if conn.in_transaction:
        return indexed
    try:
        if unindexed(conn) < BATCH:
            return indexed
        with db.waiting_at_most(conn, WAIT_MS):
            added = CHUNK
            while added == CHUNK:
                with db.transaction(conn):
                    added = catch_up(conn, CHUNK)
                indexed += added
    except (sqlite3.Error, AuditFailure):
        pass
    return indexed


@dataclass(frozen=True)
class SeqRange:
    """after < seq (< before) (<= upto): the keyset bounds of a paged read."""

    after: int = 0
    before: int | None = None
    upto: int | None = None

    def sql(self) -> tuple[str, list[object]]:
        clauses, args = ["seq > ?"], [self.after]
        if self.before is not None:
            clauses.append("seq < ?")
            args.append(self.before)
        if self.upto is not None:
            clauses.append("seq <= ?")
            args.append(self.upto)
        return " AND ".join(clauses), args


def matching_seqs(where: str, args: list[object], bounds: SeqRange = SeqRange(),
                  limit: int | None = None, descending: bool = False
                  ) -> tuple[str, list[object]]:
    """A SELECT of the sequence numbers within `bounds` whose columns match `where` (written
    over ts, actor, action, target_type and target_id, which the lookup and audit_view
    share). With `limit`, at least the first `limit` of them in the given order (each part
    is cut there, so a page costs its size, not the trail's)."""
    rng, rng_args = bounds.sql()
    parts = [(f"SELECT seq FROM audit_events WHERE {rng}", rng_args)] if where == "1" else [
        (f"SELECT seq FROM audit_lookup WHERE {rng} AND {where}", [*rng_args, *args]),
        (f"SELECT seq FROM audit_view WHERE seq > {_INDEXED_UPTO} AND {rng} AND {where}",
         [*rng_args, *args])]
    if limit is not None:
        order = "DESC" if descending else "ASC"
        parts = [(f"SELECT seq FROM ({sql} ORDER BY seq {order} LIMIT {int(limit)})", a)
                 for sql, a in parts]
    return " UNION ALL ".join(sql for sql, _ in parts), [a for _, p in parts for a in p]


def newest_ts(conn: sqlite3.Connection) -> str | None:
    """The latest timestamp anywhere in the trail (not always the head's: a clock set back
    records earlier times after later ones)."""
    refresh(conn)
    return conn.execute(
        f"SELECT MAX(m) FROM (SELECT MAX(ts) AS m FROM audit_lookup UNION ALL "
        f"SELECT MAX(ts) FROM audit_view WHERE seq > {_INDEXED_UPTO})").fetchone()[0]


# One multi-path json_extract (one parse) against the row's values as a JSON array.
_DIFFERS = ("json_array(l.ts, l.actor, l.action, l.target_type, l.target_id) IS NOT "
            "json_extract(e.body, '$.ts', '$.actor.username', '$.action', '$.target.type', "
            "'$.target.id')")
# JSON functions raise on a BLOB and on malformed JSON, and SQLite's OR does not stop at a
# true operand, so after such an error the careful form tells those rows apart in a CASE
# first: a lookup value that is a BLOB, or a body that is not JSON text, is a mismatch (the
# chain walk names an edited body as well).
_CAREFULLY = (
    "CASE WHEN 'blob' IN (typeof(l.ts), typeof(l.actor), typeof(l.action), "
    "typeof(l.target_type), typeof(l.target_id)) OR typeof(e.body) != 'text' "
    f"OR NOT json_valid(e.body) THEN 1 ELSE {_DIFFERS} END")
_MISMATCH, _MISMATCH_CAREFULLY = (
    "SELECT l.seq FROM audit_lookup l LEFT JOIN audit_events e ON e.seq = l.seq "
    f"WHERE l.seq >= ? AND l.seq < ? AND (e.seq IS NULL OR {differs}) ORDER BY l.seq LIMIT 1"
    for differs in (_DIFFERS, _CAREFULLY))


# SQLite's JSON functions stop at an escaped NUL (\u0000) inside a string: the lookup, filled
# through audit_view, holds the text before it, while the multi-path json_extract above
# encodes the whole string. Such a row differs only there, so a row _DIFFERS flags counts
# as a mismatch only if it also differs from what audit_view gives (column by column).
_AGREES_WITH_VIEW = (
    "SELECT l.ts IS v.ts AND l.actor IS v.actor AND l.action IS v.action AND "
    "l.target_type IS v.target_type AND l.target_id IS v.target_id "
    "FROM audit_lookup l JOIN audit_view v ON v.seq = l.seq WHERE l.seq = ?")


def _agrees_with_view(conn: sqlite3.Connection, seq: int) -> bool:
    try:
        row = conn.execute(_AGREES_WITH_VIEW, (seq,)).fetchone()
    except sqlite3.OperationalError:  # a body that is not JSON text
        return False
    return row is not None and row[0] == 1


def first_mismatch(conn: sqlite3.Connection, start: int = 1, stop: int | None = None
                   ) -> int | None:
    """The first lookup row in start <= seq (< stop) that disagrees with the body it was
    copied from or names an event the trail lacks, or the first event there that the lookup
    skipped (a gap hides it from filtered reads); None when all is well. `audit verify`
    calls this."""
    stop = stop if stop is not None else 2**63 - 1
    after = start
    while True:
        try:
            row = conn.execute(_MISMATCH, (after, stop)).fetchone()
        except sqlite3.OperationalError:  # a BLOB or malformed JSON where JSON text belongs
            row = conn.execute(_MISMATCH_CAREFULLY, (after, stop)).fetchone()
        if row is None:
            break
        if not _agrees_with_view(conn, row[0]):
            return row[0]
        after = row[0] + 1  # a value holding NUL, copied as SQLite reads it
    count = conn.execute("SELECT COUNT(*) FROM audit_lookup WHERE seq >= ? AND seq < ?",
                         (start, stop)).fetchone()[0]
    indexed = conn.execute(f"SELECT {_INDEXED_UPTO}").fetchone()[0]
    end = min(stop - 1, indexed)  # every event up to here must have its row
    if end >= start and count != end - start + 1:
        return conn.execute("SELECT MIN(seq) FROM audit_events WHERE seq >= ? AND seq <= ? "
                            "AND seq NOT IN (SELECT seq FROM audit_lookup WHERE seq >= ?)",
                            (start, end, start)).fetchone()[0]
    return None
