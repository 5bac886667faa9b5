"""Logging in, lockout, password expiry and idle sessions (11.300(b)-(d)).

Failures are audit events too. Failed attempts are counted by the name typed, whether or
not it exists, so neither the error nor the lockout reveals which usernames are real.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.audit.events import Actor, Event
from appliance.clock import format_ts, parse_ts
from appliance.context import Appliance
from appliance.errors import AccountLocked, AuthenticationFailed
from appliance.identity.passwords import check_password, unmatchable_hash
from appliance.identity.session import Session
from appliance.identity.users import User, get_user, session_epoch
from appliance.services.access import end_session

# Usernames have at most 32 characters (identity/users.py), so a longer typed name is no
# one's: it is counted and recorded cut to this length and marked, never whole (typed at
# the login screen, it went into the append-only trail several times over: 10 MB typed,
# 88 MB written, per attempt).
TYPED_MAX = 64


def typed_name(username: str) -> str:
    """The name as typed, as failures are counted and recorded: trimmed, lower case, and
    cut (with a mark) if longer than any username can be."""
    name = username.strip().lower()
    return name if len(name) <= TYPED_MAX else name[:TYPED_MAX] + "\u2026"


def _failures(app: Appliance, name: str, since: datetime) -> list[datetime]:
    rows = app.conn.execute("SELECT ts FROM login_failures WHERE username = ? AND ts >= ? "
                            "ORDER BY ts", (name, format_ts(since))).fetchall()
    return [parse_ts(r[0]) for r in rows]


def locked_until(app: Appliance, name: str, now: datetime) -> datetime | None:
    """Locked while `lock_minutes` have not passed since `max_failures` failures fell
    within `window_minutes` of each other: the lock lasts its own time, not only as long
    as the failures that caused it stay inside the counting window."""
    policy = app.settings.lockout
    window, lock = timedelta(minutes=policy.window_minutes), \
        timedelta(minutes=policy.lock_minutes)
    fails = _failures(app, name, now - window - lock)
    k = max(1, policy.max_failures)
    ends = [fails[i] for i in range(k - 1, len(fails)) if fails[i] - fails[i - k + 1] <= window]
    if not ends:
        return None
    until = ends[-1] + lock
    return until if now < until else None


def check_credentials(app: Appliance, name: str, password: str) -> User | None:
    """The user if the password is right and the account active; constant work either way."""
    user = get_user(app.conn, name)
    n = app.settings.password.scrypt_n
    if user is None:
        # One derivation, as for a known name: a dummy made with hash_password would cost a
        # second one in every new process (each CLI command), timing that reveals the name.
        check_password(password, unmatchable_hash(n))
        return None
    return user if credentials_match(user, password) else None


def credentials_match(user: User, password: str) -> bool:
    """The password is the account's (checked first, so the work is the same either way)
    and the account is active."""
    return check_password(password, user.password_hash) and user.active


@dataclass(frozen=True)
class Attempt:
    """A password check under way, already counted as a failure (`claim_attempt`)."""

    name: str
    ts: str
    rowid: int


def claim_attempt(app: Appliance, name: str, now: datetime
                  ) -> tuple[Attempt | None, datetime | None]:
    """Before a password is checked: under the write lock, the lockout is checked and, if
    the name is not locked, this attempt is counted as a failure until its password proves
    right (`release_attempt`) or wrong (`record_failure`). Checked without counting, a
    burst of simultaneous attempts would all pass the check before any failure was
    stored, and try as many passwords as it held attempts (11.300(d)). An attempt killed
    half-way stays counted: fail closed. Returns (attempt, None) or (None, locked until)."""
    ts = format_ts(now)
    with app.transaction() as conn:
        until = locked_until(app, name, now)
        if until is not None:
            return None, until
        rowid = conn.execute("INSERT INTO login_failures (username, ts) VALUES (?, ?)",
                             (name, ts)).lastrowid
    return Attempt(name, ts, rowid), None


def _unclaim(conn: sqlite3.Connection, attempt: Attempt) -> None:
    conn.execute("DELETE FROM login_failures WHERE rowid = ? AND username = ? AND ts = ?",
                 (attempt.rowid, attempt.name, attempt.ts))


def release_attempt(app: Appliance, attempt: Attempt) -> None:
    """The password was right: this attempt is no failure."""
    with app.transaction() as conn:
        _unclaim(conn, attempt)


def record_failure(app: Appliance, name: str, action: str, why: str, now: datetime,
                   attempt: Attempt | None = None) -> None:
    """Count a failed password check and record it; lock and say so at the threshold.
    The `attempt` claimed for the check becomes this failure (counted again if a
    successful login or an unlock cleared it meanwhile)."""
    user = get_user(app.conn, name)
    actor = Actor(name, user.full_name if user else "", "none")
    with app.transaction() as conn:
        if attempt is not None:
            _unclaim(conn, attempt)
        conn.execute("INSERT INTO login_failures (username, ts) VALUES (?, ?)",
                     (name, format_ts(now)))
        app.trail.append(Event(action=action, actor=actor, target_type="user", target_id=name,
                               outcome="failure", details={"reason": why},
                               terminal=app.terminal))
        until = locked_until(app, name, now)
        if until is not None:
            app.trail.append(Event(
                action="auth.lockout", actor=actor, target_type="user", target_id=name,
                outcome="failure", terminal=app.terminal,
                details={"failures": app.settings.lockout.max_failures,
                         "window_minutes": app.settings.lockout.window_minutes,
                         "locked_until": format_ts(until)}))
    if until is not None:
        raise AccountLocked(f"too many failed attempts: locked until {format_ts(until)}")


def password_expired(app: Appliance, user: User, now: datetime) -> bool:
    """Older than the policy's maximum age (11.300(b)); 0 turns expiry off."""
    max_age = app.settings.password.max_age_days
    return max_age > 0 and now - parse_ts(user.password_changed_at) > timedelta(days=max_age)


def login(app: Appliance, username: str, password: str) -> Session:
    name = typed_name(username)
    now = app.clock.now()
    attempt, until = claim_attempt(app, name, now)
    if attempt is None:
        with app.transaction():
            app.trail.append(Event(
                action="auth.login", actor=Actor(name, "", "none"), target_type="user",
                target_id=name, outcome="failure", terminal=app.terminal,
                details={"reason": "account locked"}))
        raise AccountLocked(f"too many failed attempts: locked until {format_ts(until)}")
    user = check_credentials(app, name, password)
    if user is None:
        record_failure(app, name, "auth.login", "bad credentials or inactive account", now,
                       attempt)
        # Never says whether the username exists.
        raise AuthenticationFailed("login failed: unknown user or wrong password")
    expired = password_expired(app, user, now)
    session = Session(user.username, user.full_name, user.roles, app.terminal, now, now,
                      must_change_password=user.must_change_password or expired,
                      password_expired=expired, id=str(uuid.uuid4()),
                      epoch=session_epoch(app.conn, user.username))
    with app.transaction() as conn:  # the claimed attempt too
        conn.execute("DELETE FROM login_failures WHERE username = ?", (name,))
        app.trail.append(Event(
            action="auth.login", actor=session.actor(",".join(user.roles)),
            target_type="user", target_id=user.username, terminal=app.terminal,
            details={"session": session.id, "must_change_password": session.must_change_password,
                     "password_expired": expired}))
    return session


def logout(app: Appliance, session: Session, reason: str = "logout") -> None:
    if session.ended:
        return
    end_session(app, session, "auth.logout", {"reason": reason})
