"""Account management (security role): add users. Accounts are disabled, never deleted."""

from __future__ import annotations

from appliance.audit.events import Event
from appliance.context import Appliance
from appliance.errors import InvalidInput
from appliance.identity.passwords import hash_password
from appliance.identity.policy import check_new_password
from appliance.identity.roles import ROLES
from appliance.identity.session import Session
from appliance.identity.users import User, insert_user, normalise_username
from appliance.services.access import authorize


def add_user(app: Appliance, session: Session, username: str, full_name: str,
             roles: list[str], password: str, reason: str, *,
             must_change_password: bool = True) -> User:
    """Create an account. A temporary password must be changed at first login."""
    actor = authorize(app, session, "users.manage", target_type="user", target_id=username)
    username = normalise_username(username)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise InvalidInput(f"unknown or missing roles: {unknown or 'none given'}",
                           f"choose from {', '.join(ROLES)}")
    if not full_name.strip():
        raise InvalidInput("a user needs a printed name", "pass --full-name")
    if not reason.strip():
        raise InvalidInput("a reason is required for every change", "pass --reason")
    check_new_password(password, username, app.settings.password)
    now = app.clock.iso()
    user = User(username, full_name.strip(), tuple(roles),
                hash_password(password, app.settings.password.scrypt_n), now,
                must_change_password, "active", now, session.username)
    with app.transaction() as conn:
        insert_user(conn, user)
        app.trail.append(Event(
            action="user.create", actor=actor, target_type="user", target_id=username,
            reason=reason, new=user.public(), terminal=session.terminal))
    return user
