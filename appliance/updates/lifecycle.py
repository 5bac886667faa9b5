"""The update lifecycle: THE table of allowed state transitions, and the bundle records.

Every state change of a bundle goes through `move`, which refuses anything the table does
not list; every refusal is recorded (`refuse`) before it is raised (11.10(f)). Events carry
the bundle's digest (the SHA-256 of its signed description) so the trail names exactly
which bundle each step was taken on.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.audit.events import Actor, Event
from appliance.context import Appliance
from appliance.errors import InvalidInput, UpdateRefused


class State(StrEnum):
    IMPORTED = "IMPORTED"
    VERIFIED = "VERIFIED"
    EVALUATED = "EVALUATED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    INSTALLING = "INSTALLING"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    ROLLED_BACK = "ROLLED_BACK"


S = State
# (from, to) -> the audit action that records it. Nothing else may change a bundle's state.
TRANSITIONS: dict[tuple[State, State], str] = {
    (S.IMPORTED, S.VERIFIED): "update.verified",
    (S.IMPORTED, S.REJECTED): "update.verification_failed",
    (S.VERIFIED, S.EVALUATED): "update.evaluated",
    (S.VERIFIED, S.REJECTED): "update.evaluation_failed",
    (S.EVALUATED, S.PENDING_APPROVAL): "update.submitted",
    (S.PENDING_APPROVAL, S.APPROVED): "update.approved",          # signed, by enough admins
    (S.PENDING_APPROVAL, S.REJECTED): "update.rejected",          # signed, with a reason
    (S.APPROVED, S.INSTALLING): "update.install_started",         # install, or signed rollback
    (S.INSTALLING, S.ACTIVE): "update.activated",                 # health checks passed
    (S.INSTALLING, S.ROLLED_BACK): "update.rolled_back",          # health check failed
    (S.INSTALLING, S.APPROVED): "update.install_undone",          # refused before the switch,
                                                                  # or interrupted and undone
    (S.ACTIVE, S.APPROVED): "update.superseded",                  # kept for rollback
    (S.ACTIVE, S.ROLLED_BACK): "update.rolled_back",              # an admin rolled back
}

# What a bundle in each state is waiting for: the hint of a refusal.
NEXT_STEP = {
    S.IMPORTED: "it is checked when an admin opens it: `appliance update show`, or `o` on the "
                "console's Updates screen",
    S.VERIFIED: "its evaluation evidence is checked when an admin opens it",
    S.EVALUATED: "it is submitted for approval when an admin opens it",
    S.PENDING_APPROVAL: "an admin who did not import it opens it and signs "
                        "`appliance update approve` (or reject; `a` or `x` in the console)",
    S.APPROVED: "`appliance update install` installs it (`i` in the console)",
    S.INSTALLING: "an install is running or was interrupted: `appliance update status`",
    S.ACTIVE: "it is the running release",
    S.REJECTED: "a rejected bundle stays rejected; import a corrected one",
    S.ROLLED_BACK: "a rolled-back bundle stays rolled back; import a corrected one",
}


@dataclass(frozen=True)
class ComponentRecord:
    name: str
    kind: str
    role: str
    digest: str
    info: dict[str, Any]
    files: tuple[tuple[str, str, int], ...]      # (relpath, sha256, size), signed

    @property
    def size(self) -> int:
        return sum(f[2] for f in self.files)

    @property
    def base_model(self) -> dict[str, str] | None:
        return self.info.get("base_model")


@dataclass(frozen=True)
class BundleRecord:
    id: int
    digest: str
    name: str
    version: int
    publisher: str
    state: State
    description: str
    size_bytes: int
    source: str
    imported_at: str
    imported_by: str
    state_reason: str | None
    components: tuple[ComponentRecord, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def component(self, name: str) -> ComponentRecord | None:
        return next((c for c in self.components if c.name == name), None)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "ref": self.ref, "name": self.name, "version": self.version,
                "publisher": self.publisher, "state": str(self.state), "digest": self.digest,
                "size_bytes": self.size_bytes, "imported_at": self.imported_at,
                "imported_by": self.imported_by, "state_reason": self.state_reason}


_COLS = ("id, digest, name, version, publisher, state, description, size_bytes, source, "
         "imported_at, imported_by, state_reason")


def _components(conn: sqlite3.Connection, bundle_id: int) -> tuple[ComponentRecord, ...]:
    rows = conn.execute("SELECT name, kind, role, digest, info, files FROM bundle_components "
                        "WHERE bundle_id = ? ORDER BY name", (bundle_id,)).fetchall()
    return tuple(ComponentRecord(n, k, r, d, json.loads(i),
                                 tuple((f[0], f[1], int(f[2])) for f in json.loads(fs)))
                 for n, k, r, d, i, fs in rows)


def _record(conn: sqlite3.Connection, row: tuple) -> BundleRecord:
    values = list(row)
    values[5] = State(values[5])
    return BundleRecord(*values, components=_components(conn, row[0]))


def get_bundle(conn: sqlite3.Connection, bundle_id: int) -> BundleRecord:
    row = conn.execute(f"SELECT {_COLS} FROM bundles WHERE id = ?", (bundle_id,)).fetchone()
    if row is None:
        raise InvalidInput(f"no bundle with id {bundle_id}", "see `appliance update list`")
    return _record(conn, row)


_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def _stored_int(text: str) -> int | None:
    """ASCII digits that SQLite can hold (a larger number names no bundle: SQLite would
    raise OverflowError on it, and int() refuses other scripts' digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if number < 2**63 else None


def find_bundle(conn: sqlite3.Connection, ref: str) -> BundleRecord:
    """A bundle by `name@version`, numeric id, or a digest prefix of 8 or more hex digits."""
    ref = (ref or "").strip()
    rows: list[tuple] = []
    if "@" in ref:
        name, _, version = ref.rpartition("@")
        if (number := _stored_int(version)) is not None:
            rows = conn.execute(f"SELECT {_COLS} FROM bundles WHERE name = ? AND version = ?",
                                (name, number)).fetchall()
    elif (number := _stored_int(ref)) is not None:
        rows = conn.execute(f"SELECT {_COLS} FROM bundles WHERE id = ?", (number,)).fetchall()
    if not rows and _HEX.match(ref.lower()):
        rows = conn.execute(f"SELECT {_COLS} FROM bundles WHERE digest LIKE ?",
                            (ref.lower() + "%",)).fetchall()
    if len(rows) > 1:
        raise InvalidInput(f"{ref!r} matches {len(rows)} bundles", "give more of the digest")
    if not rows:
        raise InvalidInput(f"no bundle {ref!r}",
                           "name it as NAME@VERSION, its id, or a digest prefix; see "
                           "`appliance update list`")
    return _record(conn, rows[0])


def state_named(text: str) -> State:
    """A lifecycle state as typed (any case), or a one-line error listing the states."""
    try:
        return State(text.strip().upper())
    except ValueError:
        raise InvalidInput(f"unknown state {text!r}",
                           f"choose from {', '.join(State)}") from None


def all_bundles(conn: sqlite3.Connection, state: str | None = None) -> list[BundleRecord]:
    sql, args = f"SELECT {_COLS} FROM bundles", []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    return [_record(conn, r) for r in conn.execute(sql + " ORDER BY id DESC", args).fetchall()]


def active_bundle(conn: sqlite3.Connection) -> BundleRecord | None:
    row = conn.execute(f"SELECT {_COLS} FROM bundles WHERE state = 'ACTIVE' ORDER BY id DESC"
                       " LIMIT 1").fetchone()
    return _record(conn, row) if row else None


def allowed(frm: State, to: State) -> bool:
    return (frm, to) in TRANSITIONS


def bundle_event(bundle: BundleRecord, action: str, actor: Actor, terminal: str, *,
                 outcome: str = "success", reason: str | None = None, old: Any = None,
                 new: Any = None, details: dict[str, Any] | None = None) -> Event:
    """An event on a bundle, always naming its digest."""
    return Event(action=action, actor=actor, target_type="bundle", target_id=bundle.ref,
                 target_digest=bundle.digest, outcome=outcome, reason=reason, old=old, new=new,
                 details={"bundle_digest": bundle.digest, **(details or {})},
                 terminal=terminal)


def refuse(app: Appliance, actor: Actor, terminal: str, bundle: BundleRecord | None,
           step: str, message: str, hint: str | None = None,
           details: dict[str, Any] | None = None) -> UpdateRefused:
    """Record a refused step in its own transaction and return the error to raise."""
    event_details = {"step": step, "refused": message, **(details or {})}
    if bundle is not None:
        event = bundle_event(bundle, "update.refused", actor, terminal, outcome="failure",
                             reason=message, details={"state": str(bundle.state),
                                                      **event_details})
    else:
        event = Event(action="update.refused", actor=actor, target_type="bundle",
                      target_id="", outcome="failure", reason=message, details=event_details,
                      terminal=terminal)
    with app.transaction():
        app.trail.append(event)
    return UpdateRefused(message, hint)


def require(app: Appliance, actor: Actor, terminal: str, bundle: BundleRecord, to: State,
            step: str) -> None:
    """Refuse (recorded) unless the table allows `bundle` to move to `to` now."""
    if not allowed(bundle.state, to):
        raise refuse(app, actor, terminal, bundle, step,
                     f"{bundle.ref} is {bundle.state}: {step} is not allowed now "
                     f"(it would need {bundle.state} -> {to})", NEXT_STEP[bundle.state])


def move(conn: sqlite3.Connection, bundle: BundleRecord, to: State,
         reason: str | None = None) -> tuple[str, dict[str, str], dict[str, str]]:
    """Change the state inside the caller's transaction; returns (action, old, new) for the
    event. Guarded on the state read, so a concurrent change makes this fail, not overwrite."""
    action = TRANSITIONS.get((bundle.state, to))
    if action is None:
        raise UpdateRefused(f"{bundle.ref}: {bundle.state} -> {to} is not a lifecycle step",
                            NEXT_STEP[bundle.state])
    cur = conn.execute("UPDATE bundles SET state = ?, state_reason = ? WHERE id = ? AND "
                       "state = ?", (str(to), reason, bundle.id, str(bundle.state)))
    if cur.rowcount != 1:
        raise UpdateRefused(f"{bundle.ref} changed state while this step ran",
                            "look at it again with `appliance update show`")
    return action, {"state": str(bundle.state)}, {"state": str(to)}


def transition(app: Appliance, bundle: BundleRecord, to: State, actor: Actor, terminal: str,
               *, reason: str, outcome: str = "success",
               details: dict[str, Any] | None = None) -> BundleRecord:
    """Move and record in the caller's transaction (unsigned steps), with the reason every
    change to a record carries (the automatic steps say what they found)."""
    action, old, new = move(app.conn, bundle, to, reason)
    app.trail.append(bundle_event(bundle, action, actor, terminal, outcome=outcome,
                                  reason=reason, old=old, new=new, details=details))
    return get_bundle(app.conn, bundle.id)
