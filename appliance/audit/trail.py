"""The one write path of the audit trail, and paged reads of it.

Appends run inside the caller's `BEGIN IMMEDIATE` transaction, so a state change and its
event commit together or not at all. A trigger reads the head inside that transaction and
refuses any row that does not continue it: that is the guarantee. The append itself starts
from the head its connection last wrote (appends are hot, and this saves a query each),
and when the trigger refuses, because another process appended or a transaction rolled
back, it reads the head inside the transaction and tries once more.
"""

from __future__ import annotations

import _hashlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from appliance.audit.checkpoint import Checkpointer, CheckpointPolicy
from appliance.audit.events import Appended, Event, StoredEvent
from appliance.clock import Clock
from appliance.db import damaged
from appliance.errors import AuditFailure, IntegrityError

GENESIS = bytes(32)
_new_tuple = tuple.__new__  # Appended without its Python-level __new__


def chain_sha256(fips: bool) -> Callable[[bytes], Any]:
    """The SHA-256 of each append's chain hash: CPython's own C implementation where the
    build has one and OpenSSL is not in FIPS mode, else OpenSSL's. Warm, OpenSSL's is
    faster; but an append runs right after the previous one's fsync, when every piece of
    code runs cold, and there the small C function beats OpenSSL's EVP layers (context
    allocation, provider dispatch) by 1-2 µs an append (docs/performance.md). The bytes are
    the same, and `audit verify` and the auditor's verifier re-hash every event with
    OpenSSL's, so each implementation checks the other. Under FIPS the validated module
    hashes, as everything else does."""
    if fips:
        return hashlib.sha256
    try:
        from _sha2 import sha256  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:  # a build without them
            return hashlib.sha256
    return sha256


_sha256 = chain_sha256(bool(_hashlib.get_fips_mode()))

_HEAD_AND_LAST_CHECKPOINT = (
    "SELECT seq, hash, json_extract(body, '$.ts'), (SELECT json_extract(body, '$.ts') FROM "
    "audit_checkpoints ORDER BY id DESC LIMIT 1) FROM audit_events ORDER BY seq DESC LIMIT 1")
_OVERDUE = ("SELECT (SELECT max(seq) FROM audit_events), "
            "(SELECT tree_size FROM audit_checkpoints ORDER BY id DESC LIMIT 1), "
            "(SELECT json_extract(body, '$.ts') FROM audit_checkpoints ORDER BY id DESC LIMIT 1)")
# The body is bound as the UTF-8 bytes that were hashed and stored as TEXT by SQLite, so
# the append never decodes them in Python.
_INSERT = ("INSERT INTO audit_events (seq, prev_hash, hash, body) "
           "VALUES (?, ?, ?, CAST(? AS TEXT))")


@dataclass(frozen=True)
class Head:
    seq: int
    hash: bytes
    ts: str | None


def read_head(conn: sqlite3.Connection) -> Head:
    row = conn.execute(
        "SELECT seq, hash, json_extract(body, '$.ts') FROM audit_events ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return Head(*row) if row else Head(0, GENESIS, None)


@dataclass(slots=True)
class HeadCache:
    """The head this connection's last append left, and when the next time-based checkpoint
    falls due (a timestamp string, as such strings order as text; "" before the first
    checkpoint, so one is due at once). A guess the trigger checks, never trusted: seq -1
    means "read it"."""

    seq: int = -1
    hash: bytes = GENESIS
    ts: str | None = None
    deadline: str = ""


@dataclass(slots=True)
class Trail:
    conn: sqlite3.Connection
    clock: Clock
    checkpointer: Checkpointer
    policy: CheckpointPolicy
    head: HeadCache = field(default_factory=HeadCache)
    # The INSERT's own cursor: `conn.execute` makes and registers a new one per call.
    cursor: sqlite3.Cursor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.cursor = self.conn.cursor()

    def append(self, event: Event) -> Appended:
        """Record one event. Must run inside `db.transaction`; raises AuditFailure if it can't.
        One function on purpose: this is the hottest path in the appliance."""
        conn, head = self.conn, self.head
        if not conn.in_transaction:
            raise AuditFailure("audit append outside a transaction")
        ts = self.clock.iso()
        try:
            for attempt in (1, 2):
                if head.seq < 0:
                    self._read_head()
                seq, prev = head.seq + 1, head.hash
                warning = None
                if head.ts is not None and ts < head.ts:
                    warning = f"clock earlier than previous event ({head.ts})"
                data = event.canonical(seq, ts, warning)
                digest = _sha256(prev + data).digest()
                try:
                    self.cursor.execute(_INSERT, (seq, prev, digest, data))
                    break
                except sqlite3.IntegrityError as exc:
                    if attempt == 2 or not str(exc).startswith("audit: "):
                        raise
                    head.seq = -1  # the trigger refused a stale guess: read the head again
            head.seq, head.hash, head.ts = seq, digest, ts
            # A checkpoint after a signature, every N events, and when the deadline passes.
            if (event.signature is not None or seq % self.policy.every_events == 0
                    or ts >= head.deadline):
                self._checkpoint("signature" if event.signature else "policy", ts)
        except sqlite3.Error as exc:
            head.seq = -1
            what = f"the audit trail could not record {event.action!r}"
            if (bad := damaged(exc)) is not None:  # not disk space: the file itself
                raise IntegrityError(f"{what}: {bad.message}", bad.hint) from exc
            raise AuditFailure(f"{what}: {exc}") from exc
        return _new_tuple(Appended, (seq, prev, digest, data))

    def _read_head(self) -> None:
        row = self.conn.execute(_HEAD_AND_LAST_CHECKPOINT).fetchone()
        seq, prev, ts, checkpoint_ts = row if row else (0, GENESIS, None, None)
        if type(prev) is not bytes or len(prev) != 32 or type(ts) not in (str, type(None)):
            # Only tampering stores such a head; nothing can be chained to it (fail closed).
            raise IntegrityError(f"the newest audit event ({seq}) is damaged: its hash or time "
                                 "is not of the stored form",
                                 "keep the file for investigation; restore a verified backup "
                                 "with `appliance backup restore`")
        self.head.seq, self.head.hash, self.head.ts = seq, prev, ts
        self.head.deadline = self.policy.deadline_after(checkpoint_ts)

    def _checkpoint(self, reason: str, ts: str) -> None:
        self.checkpointer.write(self.conn, ts, reason)
        self.head.deadline = self.policy.deadline_after(ts)

    def checkpoint(self, reason: str) -> None:
        """Write a checkpoint now (exports, anchors); inside a transaction."""
        self._checkpoint(reason, self.clock.iso())

    def checkpoint_if_overdue(self) -> bool:
        """Sign the events that have waited past the time policy with nothing appended since
        to trigger it (appends test the deadline, so a quiet appliance's last events would
        wait for the next action); inside a transaction. True if a checkpoint was written."""
        head, sealed, sealed_ts = self.conn.execute(_OVERDUE).fetchone()
        if head is None or head <= (sealed or 0):
            return False
        ts = self.clock.iso()
        if ts < self.policy.deadline_after(sealed_ts):  # "" (due) with no checkpoint
            return False
        self._checkpoint("policy", ts)
        return True


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

