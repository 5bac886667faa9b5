"""Account management (security role), training records (admin) and password changes.

Accounts are disabled, never deleted; usernames are never reused (11.100, 11.300(a)).
Every change records old and new values and a reason; no password or hash is ever logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.audit import query
from appliance.audit.events import Actor, Event
from appliance.audit.query import EventFilter
from appliance.clock import format_ts
from appliance.context import Appliance
from appliance.errors import AccountLocked, InvalidInput, PermissionDenied
from appliance.identity.passwords import check_password, hash_password
from appliance.identity.policy import check_new_password, temporary_password
from appliance.identity.roles import ROLES, SEPARATED, TRAINING_REQUIRED
from appliance.identity.session import Session
from appliance.identity.signatures import Signature
from appliance.identity.users import (
    User,
    active_holders,
    get_user,
    has_training,
    insert_user,
    list_users,
    next_session_epoch,
    normalise_username,
    session_epoch,
    update_user,
)
from appliance.services import auth, signing
from appliance.services.access import authorize, record_denial, refresh_roles
from appliance.text import one_line


def _reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise InvalidInput("a reason is required for every change", "pass --reason")
    return one_line(reason, "the reason")


def _existing(app: Appliance, username: str) -> User:
    user = get_user(app.conn, username)
    if user is None:
        raise InvalidInput(f"no user {username!r}", "see `appliance users list`")
    return user


def _check_roles(app: Appliance, username: str, roles: list[str]) -> None:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise InvalidInput(f"unknown or missing roles: {unknown or 'none given'}",
                           f"choose from {', '.join(ROLES)}")
    if len(set(roles)) != len(roles):
        # A role stored twice would let revoking it once leave an account with no role.
        twice = sorted({r for r in roles if roles.count(r) > 1})
        raise InvalidInput(f"a role given more than once: {', '.join(twice)}",
                           "name each role once")
    for role in sorted(set(roles) & TRAINING_REQUIRED):
        if not has_training(app.conn, username, role):
            raise InvalidInput(f"{username} has no recorded training for the {role} role",
                               f"an admin records it first: `appliance users train {username} "
                               f"--role {role}`")


def add_user(app: Appliance, session: Session, username: str, full_name: str,
             roles: list[str], password: str, reason: str, *,
             must_change_password: bool = True) -> User:
    """Create an account. A temporary password must be changed at first login."""
    actor = authorize(app, session, "users.manage", target_type="user", target_id=username)
    username = normalise_username(username)
    reason = _reason(reason)
    full_name = one_line(full_name, "the printed name")
    if not full_name:
        raise InvalidInput("a user needs a printed name", "pass --full-name")
    _check_roles(app, username, roles)
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


def _change(app: Appliance, session: Session, actor: Actor, username: str, action: str,
            reason: str, change: Callable[[User], dict[str, object]],
            end_sessions: bool = False) -> User:
    """One audited change of stored account fields, old and new values recorded. Callers
    authorise first, so a refusal is recorded before any business rule is checked.
    `change` gets the account as stored under the write lock, checks the rules on it
    (raising refuses, nothing written) and returns the fields to set: a check or a new
    roles list made from an earlier read would let two officers at once lose one's change
    (a revoked role back) or both pass a "last officer" check.
    `end_sessions`: the account's open sessions end at their next action."""
    reason = _reason(reason)
    with app.transaction() as conn:
        before = _existing(app, username)
        update_user(conn, before.username, **change(before))
        if end_sessions:
            next_session_epoch(conn, before.username)
        after = get_user(conn, before.username)
        assert after is not None
        app.trail.append(Event(
            action=action, actor=actor, target_type="user", target_id=before.username,
            reason=reason, old=before.public(), new=after.public(), terminal=session.terminal))
    return after


def _manage(app: Appliance, session: Session, username: str, *,
            may_be_own: bool = False) -> tuple[Actor, User]:
    """The officer and the account. Only what lowers one's own privilege (revoking a role
    from oneself, to split admin from security) may be done to one's own account: a role
    granted to oneself, or one's own password reset, would undo the separation of duties.
    Refusals are recorded like any denial."""
    actor = authorize(app, session, "users.manage", target_type="user", target_id=username)
    user = _existing(app, username)
    if not may_be_own:
        _not_own(app, session, user.username)
    return actor, user


def _not_own(app: Appliance, session: Session, username: str) -> None:
    """Refuse, recorded, an officer's action on their own account."""
    if username == session.username:
        record_denial(app, session, "user", username,
                      {"permission": "users.manage", "rule": "not on one's own account"})
        raise PermissionDenied(f"{session.username} may not manage their own account",
                               "ask another security officer; change your own password "
                               "with `appliance users passwd`")


# Roles someone must always hold: without a security officer no account can be managed,
# without an admin no training can be recorded, so no one could ever be made an admin
# again (and no update approved).
_KEPT = {"security": ("security officer", "give another user the security role first"),
         "admin": ("admin", "an admin records another user's training and a security "
                   "officer grants them the admin role first")}


def _keep_one(app: Appliance, username: str, losing: set[str]) -> None:
    for role in sorted(losing & set(_KEPT), reverse=True):
        if active_holders(app.conn, role) == [username]:
            what, hint = _KEPT[role]
            raise InvalidInput(f"{username} is the last active {what}", hint)


def disable_user(app: Appliance, session: Session, username: str, reason: str) -> User:
    actor, user = _manage(app, session, username, may_be_own=True)

    def change(now: User) -> dict[str, object]:
        if now.status == "disabled":  # as grant and revoke: no change, no event of one
            raise InvalidInput(f"{now.username} is already disabled", "nothing to do")
        _keep_one(app, now.username, set(now.roles))
        return {"status": "disabled"}

    return _change(app, session, actor, user.username, "user.disable", reason, change,
                   end_sessions=True)


def enable_user(app: Appliance, session: Session, username: str, reason: str) -> User:
    actor, user = _manage(app, session, username)

    def change(now: User) -> dict[str, object]:
        if now.status == "active":
            raise InvalidInput(f"{now.username} is already active", "nothing to do")
        return {"status": "active"}

    return _change(app, session, actor, user.username, "user.enable", reason, change)


def grant_role(app: Appliance, session: Session, username: str, role: str,
               reason: str) -> User:
    actor, user = _manage(app, session, username)

    def change(now: User) -> dict[str, object]:
        if role in now.roles:
            raise InvalidInput(f"{now.username} already holds {role}", "nothing to do")
        _check_roles(app, now.username, [role])
        return {"roles": (*now.roles, role)}

    return _change(app, session, actor, user.username, "user.grant_role", reason, change)


def revoke_role(app: Appliance, session: Session, username: str, role: str,
                reason: str) -> User:
    actor, user = _manage(app, session, username, may_be_own=True)

    def change(now: User) -> dict[str, object]:
        if role not in now.roles:
            raise InvalidInput(f"{now.username} does not hold {role}", "nothing to do")
        if set(now.roles) == {role}:
            raise InvalidInput(f"{role} is {now.username}'s only role",
                               "disable the account instead")
        _keep_one(app, now.username, {role})
        return {"roles": tuple(r for r in now.roles if r != role)}

    return _change(app, session, actor, user.username, "user.revoke_role", reason, change)


@dataclass(frozen=True)
class TemporaryPassword:
    username: str
    password: str


def _real_passwords(user: User, n: int) -> tuple[str, ...]:
    """The hashes of the user's last `n` own passwords. A temporary one (the stored account
    must change it) was chosen by an officer, not the user, so it never takes a place in the
    history: else a reset would push out the oldest real password the check should cover."""
    own = user.password_history if user.must_change_password else (
        user.password_hash, *user.password_history)
    return own[:n]


def reset_password(app: Appliance, session: Session, username: str,
                   reason: str) -> TemporaryPassword:
    """Loss management (11.300(b)): a temporary password that signs nothing until changed."""
    actor, user = _manage(app, session, username)
    policy = app.settings.password
    temp = temporary_password(user.username, policy)
    hashed = hash_password(temp, policy.scrypt_n)  # not under the write lock

    def change(now: User) -> dict[str, object]:
        # Failures are cleared with the reset, in its transaction.
        app.conn.execute("DELETE FROM login_failures WHERE username = ?", (now.username,))
        return {"password_hash": hashed,
                "password_history": _real_passwords(now, policy.history),
                "password_changed_at": app.clock.iso(), "must_change_password": True}

    _change(app, session, actor, user.username, "user.reset_password", reason, change,
            end_sessions=True)
    return TemporaryPassword(user.username, temp)


def unlock(app: Appliance, session: Session, username: str, reason: str) -> str:
    """Clear a lockout (11.300(d)). Never one's own: an officer locked out by wrong signature
    passwords could otherwise go on guessing from an open session without limit. Works for
    any typed name, since failures are counted by the name typed."""
    name = auth.typed_name(username)
    actor = authorize(app, session, "users.manage", target_type="user", target_id=name)
    _not_own(app, session, name)
    reason = _reason(reason)
    with app.transaction() as conn:
        n = conn.execute("DELETE FROM login_failures WHERE username = ?", (name,)).rowcount
        app.trail.append(Event(action="user.unlock", actor=actor, target_type="user",
                               target_id=name, reason=reason, details={"failures_cleared": n},
                               terminal=session.terminal))
    return name  # as failures are counted: trimmed, lower case, cut if too long


def change_password(app: Appliance, session: Session, old_password: str,
                    new_password: str) -> None:
    """The user's own change: old password, policy, no reuse of the last N (11.300(b))."""
    actor = authorize(app, session, "password.change", target_type="user",
                      target_id=session.username)
    user = _existing(app, session.username)
    now = app.clock.now()
    # A locked account checks no password here either: an open session must not be a way
    # to go on guessing (11.300(d)). Wrong old passwords count toward the lockout.
    attempt, until = auth.claim_attempt(app, user.username, now)
    if attempt is None:
        with app.transaction():
            app.trail.append(Event(
                action="user.password_change", actor=actor, target_type="user",
                target_id=user.username, outcome="failure", details={"reason": "account locked"},
                terminal=session.terminal))
        raise AccountLocked(f"too many failed attempts: locked until {format_ts(until)}")
    if not check_password(old_password, user.password_hash):
        auth.record_failure(app, user.username, "user.password_change", "wrong old password",
                            now, attempt)
        raise InvalidInput("the current password is wrong", "type your current password")
    auth.release_attempt(app, attempt)
    policy = app.settings.password
    history = _real_passwords(user, policy.history)
    check_new_password(new_password, user.username, policy, list(history))
    if user.must_change_password and check_password(new_password, user.password_hash):
        raise InvalidInput("the new password is the temporary one",
                           "choose a password of your own")
    hashed = hash_password(new_password, policy.scrypt_n)
    with app.transaction() as conn:
        # Checked again under the write lock: a reset (or a disable, another change) since
        # the checks above must not be overwritten, nor this session carried past it.
        moved = (get_user(conn, user.username).password_hash != user.password_hash
                 or session_epoch(conn, user.username) != session.epoch)
        if not moved:
            update_user(conn, user.username, password_hash=hashed, password_history=history,
                        password_changed_at=app.clock.iso(), must_change_password=False)
            epoch = next_session_epoch(conn, user.username)
            app.trail.append(Event(
                action="user.password_change", actor=actor, target_type="user",
                target_id=user.username, reason="password changed by its owner",
                details={"was_temporary_or_expired": session.must_change_password},
                terminal=session.terminal))
    if moved:
        refresh_roles(app, session)  # ends this session, recorded, if its epoch has passed
        raise InvalidInput("the password was reset or changed meanwhile",
                           "log in again with the password now in force")
    session.must_change_password = False
    session.password_expired = False
    session.epoch = epoch  # this session goes on; the owner's others end


def record_training(app: Appliance, session: Session, username: str, role: str,
                    reason: str) -> None:
    """11.10(i): an admin records that a person was trained for a role."""
    actor = authorize(app, session, "users.train", target_type="user", target_id=username)
    user = _existing(app, username)
    reason = _reason(reason)
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}", f"choose from {', '.join(ROLES)}")
    with app.transaction() as conn:
        conn.execute("INSERT INTO training (username, role, recorded_by, recorded_at, reason) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (user.username, role, session.username, app.clock.iso(), reason))
        app.trail.append(Event(
            action="user.training_recorded", actor=actor, target_type="user",
            target_id=user.username, reason=reason, new={"role": role},
            terminal=session.terminal))


def users(app: Appliance, session: Session) -> list[User]:
    authorize(app, session, "users.view", target_type="user", target_id="*")
    return list_users(app.conn)


def review_access(app: Appliance, session: Session, req: signing.SignatureRequest
                  ) -> Signature:
    """Periodic access review: a security officer signs the account list as it stands."""
    actor = authorize(app, session, "users.review", target_type="access_review",
                      target_id="users")
    with signing.signing(app, session, req, meaning="reviewed", permission="users.review",
                         target=("access_review", "users")) as signer:
        content = [u.public() for u in list_users(app.conn)]
        return signer.apply(record_type="access_review", record_id=app.clock.iso(),
                            content=content, event=Event(
                                action="user.access_review", actor=actor,
                                new={"accounts": content}))


def role_conflicts(app: Appliance) -> list[str]:
    """Warnings for people holding roles that should be separated (shown on the dashboard)."""
    out = []
    for user in list_users(app.conn):
        for pair in SEPARATED:
            if user.active and pair <= set(user.roles):
                out.append(f"{user.username} holds both {' and '.join(sorted(pair))}: "
                           "separate the admin and security roles")
    return out


def recent_lockouts(app: Appliance, session: Session, limit: int = 20) -> list[dict]:
    """Lockouts for the dashboard (11.300(d): attempts reported to admins)."""
    authorize(app, session, "users.view", target_type="user", target_id="*")
    found = query.page(app.conn, EventFilter(action="auth.lockout"), limit=limit,
                       descending=True)
    return [{"seq": e.seq, "ts": d["ts"], "username": d["target"]["id"],
             "locked_until": d["details"].get("locked_until")}
            for e in found for d in [e.data]]
