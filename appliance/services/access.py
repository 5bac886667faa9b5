"""Permission checks in the service layer; every denial is itself an audit event.

Also where sessions end: an idle session expires (11.300); a session whose account was
disabled, or whose password was reset or changed elsewhere, since login ends at its next
action; and a session that must change its password may do nothing else (a temporary or
expired password signs nothing).
Permissions come from the account as stored now, never from the roles it had at login
(11.10(d), (g)).
"""

from __future__ import annotations

from datetime import timedelta

from appliance.audit.events import Actor, Event
from appliance.context import Appliance
from appliance.errors import (
    InvalidInput,
    PasswordChangeRequired,
    PermissionDenied,
    SessionExpired,
)
from appliance.identity.roles import granting_role, roles_for
from appliance.identity.session import Session
from appliance.identity.users import account_state
from appliance.updates.lifecycle import find_bundle


def check_session(app: Appliance, session: Session) -> None:
    """Expire an idle or ended session; otherwise stamp this moment as activity."""
    now = app.clock.now()
    idle = timedelta(minutes=app.settings.session.idle_minutes)
    if not session.ended and now - session.last_activity > idle:
        end_session(app, session, "auth.session_expired",
                    {"idle_minutes": app.settings.session.idle_minutes})
        raise SessionExpired(
            f"session expired after {app.settings.session.idle_minutes} idle minutes")
    if session.ended:
        raise SessionExpired("session has ended")
    session.last_activity = now


def refresh_roles(app: Appliance, session: Session) -> None:
    """Take the roles from the stored account (one lookup by key), so a role revoked or an
    account disabled while a console stays open counts at once. A disabled or missing
    account ends the session, recorded; so does any move of the account to a new session
    epoch since login (a password reset or change, a disable, even if re-enabled since: a
    reset is what a security officer does when a password may be known to someone else,
    who may be the one holding the session)."""
    state = account_state(app.conn, session.username)
    why = _ended_because(state, session)
    if why is None:
        session.roles = state[0]
        return
    end_session(app, session, "auth.session_ended", {"reason": why}, outcome="denied")
    raise SessionExpired(f"session ended: {why}", "ask a security officer")


def _ended_because(state: tuple[tuple[str, ...], bool, int] | None, session: Session
                   ) -> str | None:
    """Why the stored account (`users.account_state`) ends this session; None if it goes on."""
    if state is None:
        return "the account no longer exists"
    if not state[1]:
        return "the account is disabled"
    if state[2] != session.epoch:
        return "the password was reset or changed, or the account disabled, since login"
    return None


def still_permitted(app: Appliance, session: Session, permission: str) -> bool:
    """The stored account, read in the caller's transaction, still grants `permission` to
    this session: no role revoked, nor the account disabled or reset, since `authorize`
    (a signing step re-reads it under the write lock)."""
    state = account_state(app.conn, session.username)
    return _ended_because(state, session) is None and \
        granting_role(state[0], permission) is not None


def end_session(app: Appliance, session: Session, action: str, details: dict,
                outcome: str = "success") -> None:
    """Mark the session ended and record why (logout, idle expiry, the account changed)."""
    session.ended = True
    with app.transaction():
        app.trail.append(Event(
            action=action, actor=session.actor(",".join(session.roles)), target_type="user",
            target_id=session.username, terminal=session.terminal, outcome=outcome,
            details={"session": session.id, **details}))


# What a session whose password must change may still do: change it, and restore a backup
# (there is no appliance yet to change it in; the restored one asks at the next login).
WHILE_PASSWORD_CHANGE_DUE = frozenset({"password.change", "backup.restore"})


def authorize(app: Appliance, session: Session, permission: str, *, target_type: str = "",
              target_id: str = "") -> Actor:
    """Return the actor (with the granting role) or record the denial and raise."""
    check_session(app, session)
    refresh_roles(app, session)
    if session.must_change_password and permission not in WHILE_PASSWORD_CHANGE_DUE:
        raise PasswordChangeRequired("your password must be changed before anything else")
    role = granting_role(session.roles, permission)
    if role is not None:
        return session.actor(role)
    needed = ", ".join(sorted(roles_for(permission)))
    record_denial(app, session, target_type, target_id,
                  {"permission": permission, "required_roles": sorted(roles_for(permission))})
    raise PermissionDenied(f"{session.username} may not {permission} (needs role: {needed})")


def record_denial(app: Appliance, session: Session, target_type: str, target_id: str,
                  details: dict[str, object]) -> None:
    """The `access.denied` event every refusal of a person leaves, before it is raised."""
    digest = _target_digest(app, target_type, target_id)
    with app.transaction():
        app.trail.append(Event(
            action="access.denied", actor=session.actor(",".join(session.roles) or "none"),
            target_type=target_type, target_id=target_id, target_digest=digest,
            outcome="denied", details=details, terminal=session.terminal))


def _target_digest(app: Appliance, target_type: str, target_id: str) -> str | None:
    """The digest of the bundle a denied action named, read for the event alone: the id is
    what was typed (a name@version, a digest prefix), which says what it was only while
    the records stay as they are; every other update event names the digest too. None for
    other targets and for a reference that names no one bundle."""
    if target_type != "bundle":
        return None
    try:
        return find_bundle(app.conn, target_id).digest
    except InvalidInput:
        return None
