"""Electronic signatures (21 CFR 11.50, 11.70): who, when, meaning, why, bound to a record.

A signature stores the SHA-256 of the canonical content of the record it signs. Checking a
signature recomputes that digest from the record as it is now, so a signature can neither
be copied onto another record nor survive a change of the one it signed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from appliance.canonical import digest_of

MEANINGS = ("approved", "rejected", "reviewed", "authored", "responsible")

STATEMENT = (
    "I understand that my electronic signature on this appliance is the legally binding "
    "equivalent of my handwritten signature (21 CFR 11.100(c)), that it is used only by me, "
    "and that each signature records my name, the date and time, and its meaning."
)


@dataclass(frozen=True)
class Signature:
    id: str
    username: str
    full_name: str
    ts: str
    meaning: str
    reason: str
    record_type: str
    record_id: str
    record_digest: str
    audit_seq: int = 0

    def manifestation(self) -> dict[str, Any]:
        """What every view and export shows (11.50): printed name, time and meaning."""
        return {"id": self.id, "username": self.username, "name": self.full_name,
                "ts": self.ts, "meaning": self.meaning, "reason": self.reason,
                "record_type": self.record_type, "record_id": self.record_id,
                "record_digest": self.record_digest}

    def line(self) -> str:
        return f"{self.meaning} by {self.full_name} ({self.username}) at {self.ts}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def binds(sig: Signature, record_type: str, record_id: str, content: Any) -> bool:
    """11.70: true only for the very record, unchanged, that was signed."""
    return (sig.record_type == record_type and sig.record_id == record_id
            and sig.record_digest == digest_of(content))


_COLS = ("id, username, full_name, ts, meaning, reason, record_type, record_id, "
         "record_digest, audit_seq")


def insert_signature(conn: sqlite3.Connection, sig: Signature) -> None:
    conn.execute(f"INSERT INTO signatures ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (sig.id, sig.username, sig.full_name, sig.ts, sig.meaning, sig.reason,
                  sig.record_type, sig.record_id, sig.record_digest, sig.audit_seq))


def get_signature(conn: sqlite3.Connection, sig_id: str) -> Signature | None:
    row = conn.execute(f"SELECT {_COLS} FROM signatures WHERE id = ?", (sig_id,)).fetchone()
    return Signature(*row) if row else None


def signatures_for(conn: sqlite3.Connection, record_type: str, record_id: str
                   ) -> list[Signature]:
    rows = conn.execute(f"SELECT {_COLS} FROM signatures WHERE record_type = ? AND "
                        "record_id = ? ORDER BY ts", (record_type, record_id)).fetchall()
    # Only rows their audit event carries: a row inserted or edited in the database (a
    # second "approver" copied from the first) is no signature (11.70; `audit verify`
    # names it).
    return [sig for sig in (Signature(*r) for r in rows) if trail_mismatch(conn, sig) is None]


def trail_mismatch(conn: sqlite3.Connection, sig: Signature) -> str | None:
    """11.70: why the stored row differs from the manifestation its audit event carries
    (the hashed, checkpointed copy), or None. A row edited past its triggers (moved to
    another record, given to another signer, its meaning changed) is caught here."""
    row = conn.execute("SELECT body FROM audit_events WHERE seq = ?",
                       (sig.audit_seq,)).fetchone()
    try:
        carried = json.loads(row[0]).get("signature") if row else None
    except (ValueError, TypeError, AttributeError):
        carried = None
    if carried == sig.manifestation():
        return None
    return (f"signature {sig.id} does not match the manifestation its audit event "
            f"{sig.audit_seq} carries: the signatures table was altered")


def all_signatures(conn: sqlite3.Connection) -> list[Signature]:
    return [Signature(*r) for r in conn.execute(f"SELECT {_COLS} FROM signatures ORDER BY ts")]
