"""What someone holding the database file does after editing events: re-chain them and
re-sign the checkpoints over them with a key (their own, or the appliance's, a file on the
appliance). Shared by the tamper tests and the auditor's verifier tests."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.audit.merkle import Frontier
from appliance.canonical import canonical_bytes
from appliance.keys import SigningKey


@contextmanager
def audit_triggers_dropped(conn: sqlite3.Connection) -> Iterator[None]:
    """The audit tables' protective triggers dropped for the block, then put back as they
    were (they stop mistakes, not someone holding the file)."""
    saved = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                         "AND tbl_name LIKE 'audit%'").fetchall()
    for name, _ in saved:
        conn.execute(f"DROP TRIGGER {name}")
    try:
        yield
    finally:
        for _, sql in saved:
            conn.execute(sql)


def rechain(conn: sqlite3.Connection, start: int = 1, stop: int | None = None) -> None:
    """Recompute the previous hash and hash of the events start <= seq < stop from their
    stored bodies, continuing the stored hash of event start - 1."""
    last = bytes(32) if start == 1 else conn.execute(
        "SELECT hash FROM audit_events WHERE seq = ?", (start - 1,)).fetchone()[0]
    for s, body in conn.execute("SELECT seq, body FROM audit_events WHERE seq >= ? AND seq < ? "
                                "ORDER BY seq", (start, stop or 2**62)).fetchall():
        h = hashlib.sha256(last + body.encode()).digest()
        conn.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?",
                     (last, h, s))
        last = h


def resign_checkpoints(conn: sqlite3.Connection, key: SigningKey) -> None:
    """Point every checkpoint at the stored chain and the Merkle tree of the stored bodies,
    and sign it with `key` (naming its key id)."""
    frontier, heads = Frontier(), {}
    for s, body, h in conn.execute(
            "SELECT seq, body, hash FROM audit_events ORDER BY seq").fetchall():
        frontier.push(body.encode())
        heads[s] = (h.hex(), frontier.root().hex(), frontier.to_bytes())
    for cid, size, text in conn.execute(
            "SELECT id, tree_size, body FROM audit_checkpoints WHERE tree_size > 0").fetchall():
        cp = json.loads(text)
        cp["head_hash"], cp["merkle_root"], fr = heads[size]
        cp["key_id"] = key.key_id
        signed = canonical_bytes(cp).decode()
        conn.execute("UPDATE audit_checkpoints SET body = ?, signature = ?, frontier = ? "
                     "WHERE id = ?", (signed, key.sign(signed.encode()), fr, cid))
