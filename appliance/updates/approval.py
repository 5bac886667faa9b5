"""What an approval signs, whether the signer looked first, and which approvals still hold.

The signed record names the bundle digest, the chosen engine profile and the digest of the
evaluation result, so an approval is bound (11.70) to exactly what the approver saw; the
record itself travels in the signature's audit event and is checked against the stored
signature digest before an install relies on it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance.audit import query
from appliance.audit.query import EventFilter
from appliance.canonical import digest_of
from appliance.identity.signatures import Signature, binds, signatures_for
from appliance.updates.lifecycle import BundleRecord


def approval_record(bundle: BundleRecord, profile_id: str | None, pinned: str | None,
                    evaluation: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "update-approval", "bundle": bundle.ref, "digest": bundle.digest,
            "publisher": bundle.publisher, "profile": profile_id, "pinned": pinned,
            "evaluation": digest_of(evaluation) if evaluation is not None else None}


def rollback_record(target: BundleRecord, current: BundleRecord, release: str
                    ) -> dict[str, Any]:
    return {"type": "update-rollback", "to": target.ref, "to_digest": target.digest,
            "from": current.ref, "from_digest": current.digest, "release": release}


def stored_check(conn: sqlite3.Connection, bundle_id: int, kind: str
                 ) -> tuple[bool, dict[str, Any]] | None:
    row = conn.execute("SELECT ok, result FROM update_checks WHERE bundle_id = ? AND kind = ?",
                       (bundle_id, kind)).fetchone()
    return (bool(row[0]), json.loads(row[1])) if row else None


def save_check(conn: sqlite3.Connection, bundle_id: int, kind: str, ok: bool,
               result: dict[str, Any], ts: str) -> None:
    conn.execute("INSERT OR REPLACE INTO update_checks (bundle_id, kind, ok, result, "
                 "checked_at) VALUES (?, ?, ?, ?, ?)",
                 (bundle_id, kind, int(ok), json.dumps(result, sort_keys=True), ts))


def _event(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
    return json.loads(conn.execute("SELECT body FROM audit_events WHERE seq = ?",
                                   (seq,)).fetchone()[0])


def last_seq(conn: sqlite3.Connection, action: str, bundle: BundleRecord) -> int:
    last = query.newest(conn, EventFilter(action=action, target_type="bundle",
                                          target_id=bundle.ref))
    return last.seq if last else 0


def viewed(conn: sqlite3.Connection, username: str, bundle: BundleRecord,
           profile_id: str | None) -> bool:
    """Did this user open the approval view of this bundle, as it is now (same digest and
    profile), since it was submitted for approval?"""
    since = last_seq(conn, "update.submitted", bundle)
    views = EventFilter(action="update.viewed", actor=username, target_type="bundle",
                        target_id=bundle.ref)
    for stored in query.events(conn, views, after_seq=since):
        event = stored.data
        if event["target"]["digest"] == bundle.digest and \
                event["details"].get("profile") == profile_id:
            return True
    return False


@dataclass(frozen=True)
class Approvals:
    record: dict[str, Any] | None       # the record enough admins signed, if any
    signers: list[Signature]            # valid signatures on `record` (or on the latest)
    required: int

    @property
    def complete(self) -> bool:
        return self.record is not None and len(self.signers) >= self.required


def approvals(conn: sqlite3.Connection, bundle: BundleRecord, required: int,
              record: dict[str, Any] | None = None) -> Approvals:
    """Valid approval signatures, grouped by the record they sign. A signature counts only
    if it binds the record carried in its audit event, that record names this bundle's
    digest, and its signer is not the importer. One signature per person."""
    groups: dict[str, tuple[dict[str, Any], dict[str, Signature]]] = {}
    for sig in signatures_for(conn, "bundle", bundle.ref):
        if sig.meaning != "approved" or sig.username == bundle.imported_by:
            continue
        carried = (_event(conn, sig.audit_seq).get("new") or {}).get("approval")
        if not isinstance(carried, dict) or carried.get("type") != "update-approval" or \
                carried.get("digest") != bundle.digest or \
                not binds(sig, "bundle", bundle.ref, carried):
            continue
        key = digest_of(carried)
        groups.setdefault(key, (carried, {}))[1].setdefault(sig.username, sig)
    if record is not None:
        _, signers = groups.get(digest_of(record), (record, {}))
        return Approvals(record, list(signers.values()), required)
    best = max(groups.values(), key=lambda g: len(g[1]), default=None)
    if best is None:
        return Approvals(None, [], required)
    return Approvals(best[0] if len(best[1]) >= required else None, list(best[1].values()),
                     required)
