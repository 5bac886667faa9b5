"""An open appliance: its home, database, clock, key and settings, passed to every service.

Nothing here is global: a process may open several appliances (tests do), each with its
own connection. Services receive this object and an authenticated Session.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from appliance import db
from appliance.audit.checkpoint import Checkpointer, CheckpointPolicy
from appliance.audit.trail import HeadCache, Trail
from appliance.clock import Clock
from appliance.errors import AuditFailure, IntegrityError, NotInitialised
from appliance.home import HomeLayout
from appliance.keys import SigningKey
from appliance.settings import AuditPolicy, Settings, load_settings


def default_terminal() -> str:
    tty = os.environ.get("SSH_TTY") or (os.ttyname(0) if os.isatty(0) else "")
    return f"{socket.gethostname()}:{tty or 'pid' + str(os.getpid())}"


@dataclass
class Appliance:
    layout: HomeLayout
    conn: sqlite3.Connection
    clock: Clock
    key: SigningKey
    settings: Settings
    appliance_id: str
    terminal: str = field(default_factory=default_terminal)
    # The write path, kept: it holds the head this connection last appended (see `trail`).
    _trail: tuple[Trail, Clock, AuditPolicy] | None = field(default=None, init=False,
                                                            repr=False, compare=False)
    # BEGIN ... COMMIT on a cursor of its own, made once: it holds no state of its own.
    _transaction: db.transaction | None = field(default=None, init=False, repr=False,
                                                compare=False)

    @classmethod
    def open(cls, home: Path, clock: Clock | None = None, terminal: str | None = None
             ) -> Appliance:
        layout = HomeLayout(Path(home))
        try:
            made = layout.exists()
        except OSError as exc:  # a home this user may not search: not "no appliance"
            raise AuditFailure(f"cannot open the appliance database {layout.db}: "
                               f"{exc.strerror or exc}") from None
        if not made:
            raise NotInitialised(f"no appliance at {layout.root}")
        conn = db.connect(layout.db)
        try:
            db.migrate(conn)
            appliance_id = db.appliance_id(conn)
        except sqlite3.DatabaseError as exc:  # a corrupt schema page: as damaged as NOTADB
            conn.close()
            raise db.damaged(exc, layout.db) or exc from exc
        if appliance_id is None:
            conn.close()
            raise NotInitialised(f"appliance at {layout.root} was never initialised completely",
                                 layout.remove_leftovers_hint())
        try:
            key = SigningKey.load(layout.signing_key)
        except (OSError, ValueError, TypeError) as exc:  # TypeError: a passphrase-protected key
            conn.close()
            why = exc.strerror if isinstance(exc, OSError) else "not an unencrypted PEM key"
            raise IntegrityError(f"the appliance signing key {layout.signing_key} cannot be "
                                 f"loaded ({why})",
                                 "keep the file for investigation; restore a verified backup "
                                 "with `appliance backup restore`") from None
        app = cls(layout, conn, clock or Clock(), key, load_settings(layout.config), appliance_id)
        if terminal:
            app.terminal = terminal
        return app

    @property
    def trail(self) -> Trail:
        """The audit write path, built once (every append goes through here) and again
        only when the clock or the audit settings are swapped; the head it last wrote
        carries over."""
        kept, audit = self._trail, self.settings.audit
        if kept is not None and kept[1] is self.clock and kept[2] is audit:
            return kept[0]
        policy = CheckpointPolicy(audit.checkpoint_every_events, audit.checkpoint_every_seconds)
        trail = Trail(self.conn, self.clock, Checkpointer(self.key, self.appliance_id), policy,
                      kept[0].head if kept is not None else HeadCache())
        self._trail = (trail, self.clock, audit)
        return trail

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        if self._transaction is None:
            self._transaction = db.transaction(self.conn, self.conn.cursor())
        return self._transaction

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Appliance:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        """Close; a damaged database met inside the block leaves it as the one-line
        IntegrityError (`db.damaged`), so the CLI and every console screen say it plainly."""
        self.close()
        bad = db.damaged(exc) if exc is not None else None
        if bad is not None:
            raise bad from exc
