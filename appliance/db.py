"""SQLite access: one WAL database per appliance, opened the same way by every process."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.errors import AuditFailure, IntegrityError
from appliance.schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the appliance database in autocommit mode; transactions are explicit (`transaction`)."""
    if not create and not path.exists():
        raise FileNotFoundError(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    except sqlite3.OperationalError as exc:  # unreadable
        raise AuditFailure(f"cannot open the appliance database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if unwritable(exc):  # a read-only home: no -wal can be made beside the file
            raise AuditFailure(f"cannot open the appliance database {path}: {exc}") from exc
        raise damaged(exc, path) or exc from exc
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Defensive mode refuses writable_schema tricks and raw page edits through SQL;
    # Python 3.12+ exposes it, 3.11 does not.
    if hasattr(conn, "setconfig") and hasattr(sqlite3, "SQLITE_DBCONFIG_DEFENSIVE"):
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE, True)
    return conn


def damaged(exc: BaseException, path: Path | str = "") -> IntegrityError | None:
    """The one-line error for a database file SQLite finds damaged (not a database, or a
    corrupt page), or None for any other error. Such a file is evidence: keep it."""
    name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.DatabaseError) else ""
    if not name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return None
    what = f"the appliance database {path}" if path else "the appliance database"
    return IntegrityError(f"{what} is damaged ({exc})",
                          "keep the file for investigation; restore a verified backup with "
                          "`appliance backup restore`")


def unwritable(exc: BaseException) -> bool:
    """A write SQLite could not make for reasons of the disk, not the data: read-only
    file or home, no permission, full, I/O error, or locked past the busy timeout."""
    name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.OperationalError) \
        else ""
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM",
                            "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED"))


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the schema migrations not yet applied (PRAGMA user_version counts them)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, ddl in enumerate(MIGRATIONS[version:], start=version + 1):
        with transaction(conn):
            # Read again under the write lock: processes that open the database at once
            # after an upgrade (the console, a command, a job) all saw it behind.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                continue
            for statement in split_script(ddl):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")


def appliance_id(conn: sqlite3.Connection) -> str | None:
    """The id `init` stored (None: initialisation never finished)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'appliance_id'").fetchone()
    return row[0] if row else None


@contextmanager
def waiting_at_most(conn: sqlite3.Connection, ms: int) -> Iterator[None]:
    """Wait at most `ms` (never longer than the connection already would) for another
    writer's lock, for work that has something better to do than wait (housekeeping); the
    connection's own patience comes back afterwards."""
    (waits,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout = {min(int(waits), int(ms))}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(waits)}")


def split_script(script: str) -> list[str]:
    """Split a DDL script into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current))
    return statements


class transaction:  # noqa: N801 - used as `with transaction(conn):`, like a function
    """BEGIN IMMEDIATE ... COMMIT: the writer lock is taken first, so the audit head read
    inside the transaction is the head the insert continues. A class rather than a
    generator: every audit append runs through it."""

    __slots__ = ("conn", "cursor")

    def __init__(self, conn: sqlite3.Connection, cursor: sqlite3.Cursor | None = None) -> None:
        """`cursor`: one of `conn`'s kept for BEGIN and COMMIT (`conn.execute` makes and
        registers a new cursor per call, a microsecond an append, cold)."""
        self.conn = conn
        self.cursor = cursor or conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise AuditFailure(f"could not start a database transaction: {exc}") from exc
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> None:
        conn = self.conn
        if exc_type is not None:
            conn.execute("ROLLBACK")
            if unwritable(exc):  # a change beside the audit event, refused by the disk
                raise AuditFailure(f"could not write to the appliance database: {exc}"
                                   ) from exc
            return
        try:
            self.cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise AuditFailure(f"could not commit: {exc}") from exc
