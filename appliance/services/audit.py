"""Audit-trail actions: verify, anchor, browse. Export lives in services/audit_export.py."""

from __future__ import annotations

from array import array
from pathlib import Path

from appliance.audit import lookup, query
from appliance.audit.checkpoint import anchor_document, latest, read_anchor, write_anchor
from appliance.audit.events import Event, StoredEvent
from appliance.audit.query import EventFilter
from appliance.audit.verify import VerifyReport, verify_trail
from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.services.access import authorize


def verify(app: Appliance, session: Session, anchor: Path | None = None,
           incremental: bool = False) -> VerifyReport:
    actor = authorize(app, session, "audit.verify", target_type="audit", target_id="trail")
    report = verify_trail(app.conn, app.key.public,
                          read_anchor(anchor) if anchor else None, incremental)
    with app.transaction():
        app.trail.append(Event(
            action="audit.verify", actor=actor, target_type="audit", target_id="trail",
            outcome="success" if report.ok else "failure",
            details={"mode": report.mode, "events_checked": report.events_checked,
                     "head_seq": report.head_seq, "first_bad_seq": report.first_bad_seq,
                     "kinds": sorted(report.kinds()), "anchor": str(anchor) if anchor else None},
            terminal=session.terminal))
    return report


def anchor(app: Appliance, session: Session, to: Path) -> Path:
    """Sign a fresh checkpoint and write it to external media for off-box custody."""
    actor = authorize(app, session, "audit.anchor", target_type="audit", target_id="trail")
    with app.transaction():
        app.trail.append(Event(
            action="audit.anchor", actor=actor, target_type="audit", target_id="trail",
            details={"to": str(to)}, terminal=session.terminal))
        app.trail.checkpoint("anchor")
    cp = latest(app.conn)
    assert cp is not None
    return write_anchor(anchor_document(cp, app.key), Path(to))


def index(app: Appliance, session: Session) -> int:
    """Bring the filter lookup up to date, so that the next filter need not; returns how
    many events it indexed. Appends leave the lookup to its readers; the console calls this
    when its audit screen opens."""
    authorize(app, session, "audit.view", target_type="audit", target_id="trail")
    return lookup.refresh(app.conn)


def events(app: Appliance, session: Session, flt: EventFilter, after_seq: int = 0,
           limit: int = 100, descending: bool = False) -> list[StoredEvent]:
    authorize(app, session, "audit.view", target_type="audit", target_id="trail")
    return query.page(app.conn, flt, after_seq, limit, descending)


def count(app: Appliance, session: Session, flt: EventFilter) -> int:
    authorize(app, session, "audit.view", target_type="audit", target_id="trail")
    return query.count(app.conn, flt)


def matching_seqs(app: Appliance, session: Session, flt: EventFilter) -> array:
    """Sequence numbers of the events a filter matches, ascending (the console's row index)."""
    authorize(app, session, "audit.view", target_type="audit", target_id="trail")
    return query.seqs(app.conn, flt)
