"""Creating an appliance: home, database, signing key and the first admin account."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import uuid
from pathlib import Path

from appliance import __version__, db
from appliance.audit.events import SYSTEM_ACTOR, Event
from appliance.clock import Clock
from appliance.context import Appliance
from appliance.errors import AlreadyInitialised, InvalidInput, NotInitialised
from appliance.home import INIT_NAMES, HomeLayout
from appliance.identity.passwords import hash_password
from appliance.identity.policy import check_new_password
from appliance.identity.users import User, insert_user, normalise_username
from appliance.keys import SigningKey
from appliance.settings import Settings, load_settings, save_settings
from appliance.text import one_line, shown

FIRST_ADMIN_ROLES = ("admin", "security")


def init_appliance(home: Path, admin: str, full_name: str, password: str, *,
                   clock: Clock | None = None, settings: Settings | None = None,
                   terminal: str | None = None) -> Appliance:
    """Create a new appliance, or refuse if one is there; on failure nothing is left behind."""
    layout = HomeLayout(Path(home))
    check_home(layout)
    clock = clock or Clock()
    settings = settings or Settings()
    admin = normalise_username(admin)
    full_name = one_line(full_name, "the printed name")
    if not full_name:
        raise InvalidInput("the first admin needs a printed name", "pass --full-name")
    check_new_password(password, admin, settings.password)

    created_root = not layout.root.exists()
    mode = None if created_root else stat.S_IMODE(layout.root.stat().st_mode)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.root, 0o700)
    except OSError as exc:  # a file in the way, a read-only disk, no permission
        raise InvalidInput(f"cannot create the appliance home {layout.root}: "
                           f"{exc.strerror or exc}", "choose another --home") from None
    lock = _lock_home(layout)
    try:
        return _create(layout, created_root, mode, admin, full_name, password, clock,
                       settings, terminal)
    finally:
        os.close(lock)


def _lock_home(layout: HomeLayout) -> int:
    """One init at a time per home: two that both found it empty would each write the key,
    the database and the settings, and the one that failed would remove the other's as
    its own. The lock (an flock on the home directory, released by the kernel if init is
    killed) is checked once the home exists; the home is checked again under it."""
    fd = os.open(layout.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The lock holder may have failed and removed the home it made just before.
        if os.stat(layout.root).st_ino != os.fstat(fd).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        raise AlreadyInitialised(f"another `appliance init` is under way at {layout.root}",
                                 "wait for it to finish; nothing was changed") from None
    try:
        check_home(layout)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create(layout: HomeLayout, created_root: bool, mode: int | None, admin: str,
            full_name: str, password: str, clock: Clock, settings: Settings,
            terminal: str | None) -> Appliance:
    made = [layout.keys, layout.db, layout.config]
    conn = None
    try:
        key = SigningKey.generate()
        key.save(layout.signing_key, layout.public_key)
        save_settings(layout.config, settings)
        conn = db.connect(layout.db, create=True)
        os.chmod(layout.db, 0o600)
        db.migrate(conn)
        # The appliance id commits with the first admin and their events, so a home that
        # names an appliance always has someone who can log in (see `check_home`).
        app = Appliance(layout, conn, clock, key, load_settings(layout.config),
                        str(uuid.uuid4()))
        if terminal:
            app.terminal = terminal
        now = clock.iso()
        user = User(admin, full_name.strip(), FIRST_ADMIN_ROLES,
                    hash_password(password, settings.password.scrypt_n), now, False,
                    "active", now, "system")
        with app.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('appliance_id', ?), "
                         "('created_at', ?), ('version', ?)",
                         (app.appliance_id, now, __version__))
            app.trail.append(Event(
                action="appliance.init", actor=SYSTEM_ACTOR, target_type="appliance",
                target_id=app.appliance_id, reason="initial set-up",
                new={"appliance_id": app.appliance_id, "version": __version__,
                     "signing_key_id": key.key_id, "settings": settings.to_dict()},
                terminal=app.terminal))
            insert_user(conn, user)
            app.trail.append(Event(
                action="user.create", actor=SYSTEM_ACTOR,
                target_type="user", target_id=admin, reason="first administrator at set-up",
                new=user.public(), terminal=app.terminal))
        return app
    except BaseException:
        if conn is not None:
            conn.close()
        for path in made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                          path.with_name(path.name + ".tmp")):
                    p.unlink(missing_ok=True)
        if created_root:
            shutil.rmtree(layout.root, ignore_errors=True)
        elif mode is not None:
            with contextlib.suppress(OSError):
                os.chmod(layout.root, mode)
        raise


def check_home(layout: HomeLayout) -> None:
    """Refuse a home `init` may not use (the CLI asks before prompting for a password; init
    asks again under its lock). The home must be new or empty (`lost+found` aside): init
    makes it 0700, which would lock others out of a directory in use. One that holds an
    appliance is refused as such; one holding only what an interrupted init left is named
    file by file, to remove. A database that cannot be read counts as an appliance:
    nothing is guessed away."""
    root = layout.root
    if os.path.lexists(root) and not root.is_dir():
        raise InvalidInput(f"the appliance home {root} is not a directory",
                           "choose another --home; nothing was changed")
    if not root.is_dir():
        return
    owner = root.stat().st_uid
    if owner != os.geteuid():  # its owner could swap keys/ or the database at any time
        raise InvalidInput(f"the appliance home {root} belongs to another account "
                           f"(uid {owner})", "choose a directory this account owns, or a "
                           "new one; nothing was changed")
    if _names_an_appliance(layout.db):
        raise AlreadyInitialised(f"an appliance already exists at {root}")
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise InvalidInput(f"cannot read the appliance home {root}: {exc.strerror or exc}",
                           "choose another --home") from None
    other = [n for n in entries if n not in INIT_NAMES and n != "lost+found"]
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise InvalidInput(f"the appliance home {root} is not empty: it holds "
                           f"{shown(other[0])}{more}",
                           "choose a new or empty directory with --home; nothing was changed")
    if layout.init_leftovers():
        raise NotInitialised(f"an interrupted `appliance init` left a half-made appliance at "
                             f"{root}", layout.remove_leftovers_hint())


def _names_an_appliance(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error:
        return True
    try:
        return conn.execute("SELECT 1 FROM meta WHERE key = 'appliance_id'").fetchone() is not None
    except sqlite3.Error as exc:  # no meta table: the schema was never migrated
        return "no such table" not in str(exc)
    finally:
        conn.close()
