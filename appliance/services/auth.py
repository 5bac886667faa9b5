"""Logging in: the only way to get a Session. Failures are audit events too."""

from __future__ import annotations

import uuid

from appliance.audit.events import Actor, Event
from appliance.context import Appliance
from appliance.errors import AuthenticationFailed
from appliance.identity.passwords import check_password, hash_password
from appliance.identity.session import Session
from appliance.identity.users import get_user

# Checked when the username is unknown, so a failure takes as long either way.
_DUMMY_HASH: dict[int, str] = {}


def login(app: Appliance, username: str, password: str) -> Session:
    name = username.strip().lower()
    user = get_user(app.conn, name)
    n = app.settings.password.scrypt_n
    if user is None:
        check_password(password, _DUMMY_HASH.setdefault(n, hash_password("x" * 16, n)))
        ok = False
    else:
        ok = check_password(password, user.password_hash) and user.active
    if not ok:
        with app.transaction():
            app.trail.append(Event(
                action="auth.login", actor=Actor(name, user.full_name if user else "", "none"),
                target_type="user", target_id=name, outcome="failure",
                details={"reason": "bad credentials or inactive account"},
                terminal=app.terminal))
        # Never says whether the username exists.
        raise AuthenticationFailed("login failed: unknown user or wrong password")
    now = app.clock.now()
    session = Session(user.username, user.full_name, user.roles, app.terminal, now, now,
                      must_change_password=user.must_change_password, id=str(uuid.uuid4()))
    with app.transaction():
        app.trail.append(Event(
            action="auth.login", actor=session.actor(",".join(user.roles)),
            target_type="user", target_id=user.username, details={"session": session.id},
            terminal=app.terminal))
    return session
