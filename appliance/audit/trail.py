"""The one write path of the audit trail, and paged reads of it.

Appends run inside the caller's `BEGIN IMMEDIATE` transaction, so a state change and its
event commit together or not at all. The head is read inside that transaction; a trigger
refuses any row that does not continue it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.audit.checkpoint import Checkpointer, CheckpointPolicy
from appliance.audit.events import Event, StoredEvent
from appliance.canonical import canonical_bytes
from appliance.clock import Clock
from appliance.errors import AuditFailure

GENESIS = bytes(32)


@dataclass(frozen=True)
class Head:
    seq: int
    hash: bytes
    ts: str | None


def read_head(conn: sqlite3.Connection) -> Head:
    row = conn.execute(
        "SELECT seq, hash, ts FROM audit_events ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return Head(*row) if row else Head(0, GENESIS, None)


@dataclass
class Trail:
    conn: sqlite3.Connection
    clock: Clock
    checkpointer: Checkpointer
    policy: CheckpointPolicy

    def append(self, event: Event) -> StoredEvent:
        """Record one event. Must run inside `db.transaction`; raises AuditFailure if it can't."""
        if not self.conn.in_transaction:
            raise AuditFailure("audit append outside a transaction")
        try:
            # One query for the head and the newest checkpoint's time: appends are hot.
            row = self.conn.execute(
                "SELECT seq, hash, ts, (SELECT json_extract(body, '$.ts') FROM "
                "audit_checkpoints ORDER BY id DESC LIMIT 1) FROM audit_events "
                "ORDER BY seq DESC LIMIT 1").fetchone()
            head, last_cp = (Head(*row[:3]), row[3]) if row else (Head(0, GENESIS, None), None)
            ts = self.clock.iso()
            warning = None
            if head.ts is not None and ts < head.ts:
                warning = f"clock earlier than previous event ({head.ts})"
            text = canonical_bytes(event.body(head.seq + 1, ts, warning)).decode("utf-8")
            digest = hashlib.sha256(head.hash + text.encode("utf-8")).digest()
            self.conn.execute(
                "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?, ?, ?, ?)",
                (head.seq + 1, head.hash, digest, text),
            )
            stored = StoredEvent(head.seq + 1, head.hash, digest, text)
            if event.signature is not None or self.policy.due(stored.seq, ts, last_cp):
                self.checkpointer.write(self.conn, ts, "signature" if event.signature else "policy")
        except sqlite3.Error as exc:
            raise AuditFailure(f"the audit trail could not record {event.action!r}: {exc}") from exc
        return stored

    def checkpoint(self, reason: str) -> None:
        """Write a checkpoint now (exports, anchors); inside a transaction."""
        self.checkpointer.write(self.conn, self.clock.iso(), reason)


def iter_events(conn: sqlite3.Connection, start: int = 1, stop: int | None = None,
                batch: int = 10_000) -> Iterator[StoredEvent]:
    """Events with start <= seq (<= stop), in order, read in keyset-paged batches."""
    seq = start - 1
    while True:
        sql = "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > ?"
        args: list[int] = [seq]
        if stop is not None:
            sql += " AND seq <= ?"
            args.append(stop)
        rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, batch)).fetchall()
        if not rows:
            return
        for row in rows:
            yield StoredEvent(*row)
        seq = rows[-1][0]

