"""Audit-trail actions: verify, anchor, browse. Export lives in services/audit_export.py."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

from appliance import db
from appliance.audit import lookup, query
from appliance.audit.checkpoint import anchor_document, anchor_path, latest, read_anchor
from appliance.audit.events import Actor, Event, StoredEvent
from appliance.audit.export import write_json
from appliance.audit.query import EventFilter
from appliance.audit.verify import VerifyReport, verify_trail
from appliance.context import Appliance
from appliance.durable import StagedFile
from appliance.errors import ApplianceError, InvalidInput
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
    """Sign a fresh checkpoint and write it to external media for off-box custody.

    The file is written under a temporary name beside its destination and renamed into place
    once the event that records it has committed, so no anchor is ever put on the media
    unrecorded (a crash in between leaves the event and the staged file), and media that
    cannot take it (unmounted, read-only, full) is a recorded failure with a one-line error.
    The checkpoint is committed first: an anchor must only ever name a checkpoint the
    database holds."""
    actor = authorize(app, session, "audit.anchor", target_type="audit", target_id="trail")
    to = Path(to)
    if not to.is_dir() and not to.parent.is_dir():
        raise InvalidInput(f"directory {to.parent} does not exist",
                           "mount the external media, or choose another --to")
    # An older anchor is evidence too. (In a directory the name carries the tree size.)
    if os.path.lexists(to) and not to.is_dir():
        raise InvalidInput(f"{to} already exists",
                           "anchors never overwrite; choose a new file name or a directory")
    if to.is_symlink():  # media's own link would take the anchor off the media
        raise InvalidInput(f"{to} is a symbolic link",
                           "anchors never follow links; choose a real directory or a new file")
    with app.transaction():
        app.trail.checkpoint("anchor")
    cp = latest(app.conn)
    assert cp is not None  # just written
    doc = anchor_document(cp, app.key)
    staged = StagedFile(anchor_path(doc, to))
    details = {"to": str(staged.path), "tree_size": cp.tree_size, "head_hash": cp.head_hash}
    try:
        write_json(staged, doc)
    except OSError as exc:
        staged.discard()
        record_write_failure(app, session, actor, "audit.anchor", details, exc)
        raise ApplianceError(f"could not write the anchor to {staged.path}: "
                             f"{exc.strerror or exc}",
                             "check that the external media is mounted, writable and not full"
                             ) from exc
    try:
        with app.transaction():
            app.trail.append(Event(
                action="audit.anchor", actor=actor, target_type="audit", target_id="trail",
                details=details, terminal=session.terminal))
    except BaseException:
        staged.discard()
        raise
    try:
        staged.commit()
    except OSError as exc:
        staged.discard()
        record_write_failure(app, session, actor, "audit.anchor", details, exc)
        raise ApplianceError(f"could not put the anchor in place at {staged.path}: "
                             f"{exc.strerror or exc}",
                             "check the external media, then anchor again") from exc
    return staged.path


def seal_overdue(app: Appliance, wait_ms: int = 500) -> bool:
    """Sign a checkpoint over events older than the time policy that nothing has sealed (a
    console left open keeps "every N minutes" true while no one acts). A checkpoint records
    no event and changes no record, so no session is needed. True if one was written.
    Waits at most `wait_ms` for another writer (whose own append then tests the policy),
    not the 30 s a person's action waits: raises AuditFailure past it."""
    with db.waiting_at_most(app.conn, wait_ms), app.transaction():
        return app.trail.checkpoint_if_overdue()


def record_write_failure(app: Appliance, session: Session, actor: Actor, action: str,
                         details: dict, exc: OSError) -> None:
    """An export or anchor that could not be written or put in place, as its own event."""
    with app.transaction():
        app.trail.append(Event(
            action=action, actor=actor, target_type="audit", target_id="trail",
            outcome="failure", details={**details, "error": str(exc)},
            terminal=session.terminal))


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
