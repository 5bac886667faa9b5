"""User accounts as stored: unique usernames, never deleted, never reused."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput

USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")


@dataclass(frozen=True)
class User:
    username: str
    full_name: str
    roles: tuple[str, ...]
    password_hash: str
    password_changed_at: str
    must_change_password: bool
    status: str
    created_at: str
    created_by: str
    password_history: tuple[str, ...] = ()
    signature_ack_at: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def public(self) -> dict[str, Any]:
        """What may be shown, signed or exported: never a password hash."""
        return {"username": self.username, "full_name": self.full_name,
                "roles": list(self.roles), "status": self.status,
                "created_at": self.created_at, "created_by": self.created_by,
                "password_changed_at": self.password_changed_at,
                "must_change_password": self.must_change_password,
                "signature_statement_acknowledged": self.signature_ack_at}


COLUMNS = ("username, full_name, roles, password_hash, password_changed_at, "
           "must_change_password, status, created_at, created_by, password_history, "
           "signature_ack_at")


def normalise_username(name: str) -> str:
    name = name.strip().lower()
    if not USERNAME_RE.match(name):
        raise InvalidInput(f"invalid username {name!r}",
                           "use 2-32 characters: a letter, then letters, digits, '.', '_' or '-'")
    return name


def _user(row: tuple) -> User:
    u, fn, roles, ph, pca, mcp, st, ca, cb, hist, ack = row
    return User(u, fn, tuple(json.loads(roles)), ph, pca, bool(mcp), st, ca, cb,
                tuple(json.loads(hist)), ack)


def get_user(conn: sqlite3.Connection, username: str) -> User | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM users WHERE username = ?",
                       (username.strip().lower(),)).fetchone()
    return _user(row) if row else None


def list_users(conn: sqlite3.Connection) -> list[User]:
    return [_user(r) for r in conn.execute(f"SELECT {COLUMNS} FROM users ORDER BY username")]


def insert_user(conn: sqlite3.Connection, user: User) -> None:
    try:
        conn.execute(
            f"INSERT INTO users ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user.username, user.full_name, json.dumps(list(user.roles)), user.password_hash,
             user.password_changed_at, int(user.must_change_password), user.status,
             user.created_at, user.created_by, json.dumps(list(user.password_history)),
             user.signature_ack_at),
        )
    except sqlite3.IntegrityError as exc:
        raise InvalidInput(f"username {user.username!r} is taken or was used before",
                           "usernames are never reused; choose another") from exc


_UPDATABLE = {"full_name", "roles", "password_hash", "password_changed_at",
              "must_change_password", "status", "password_history", "signature_ack_at"}


def update_user(conn: sqlite3.Connection, username: str, **changes: Any) -> None:
    """Change stored fields; callers record old and new values in the audit event."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = {k: json.dumps(list(v)) if k in ("roles", "password_history") else
              (int(v) if isinstance(v, bool) else v) for k, v in changes.items()}
    sets = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE users SET {sets} WHERE username = ?", (*values.values(), username))


def session_epoch(conn: sqlite3.Connection, username: str) -> int:
    """The account's session epoch: a password reset or change and a disable move it on,
    and a session opened in an earlier one ends (services/access.refresh_roles)."""
    row = conn.execute("SELECT session_epoch FROM users WHERE username = ?",
                       (username,)).fetchone()
    return row[0] if row else 0


def account_state(conn: sqlite3.Connection, username: str
                  ) -> tuple[tuple[str, ...], bool, int] | None:
    """Roles, whether active, and session epoch: what every authorisation re-reads, in one
    lookup by key."""
    row = conn.execute("SELECT roles, status, session_epoch FROM users WHERE username = ?",
                       (username,)).fetchone()
    return (tuple(json.loads(row[0])), row[1] == "active", row[2]) if row else None


def next_session_epoch(conn: sqlite3.Connection, username: str) -> int:
    conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE username = ?",
                 (username,))
    return session_epoch(conn, username)


def has_training(conn: sqlite3.Connection, username: str, role: str) -> bool:
    return conn.execute("SELECT 1 FROM training WHERE username = ? AND role = ?",
                        (username, role)).fetchone() is not None


def active_holders(conn: sqlite3.Connection, role: str) -> list[str]:
    return [u.username for u in list_users(conn) if u.active and role in u.roles]
