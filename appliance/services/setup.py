"""Creating an appliance: home, database, signing key and the first admin account."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from appliance import __version__, db
from appliance.audit.events import SYSTEM_ACTOR, Event
from appliance.clock import Clock
from appliance.context import Appliance
from appliance.errors import AlreadyInitialised, InvalidInput
from appliance.home import HomeLayout
from appliance.identity.passwords import hash_password
from appliance.identity.policy import check_new_password
from appliance.identity.users import User, insert_user, normalise_username
from appliance.keys import SigningKey
from appliance.settings import Settings, save_settings
from appliance.text import one_line

FIRST_ADMIN_ROLES = ("admin", "security")


def init_appliance(home: Path, admin: str, full_name: str, password: str, *,
                   clock: Clock | None = None, settings: Settings | None = None,
                   terminal: str | None = None) -> Appliance:
    """Create a new appliance, or refuse if one is there; on failure nothing is left behind."""
    layout = HomeLayout(Path(home))
    if layout.db.exists() or layout.signing_key.exists():
        raise AlreadyInitialised(f"an appliance already exists at {layout.root}")
    clock = clock or Clock()
    settings = settings or Settings()
    admin = normalise_username(admin)
    full_name = one_line(full_name, "the printed name")
    if not full_name:
        raise InvalidInput("the first admin needs a printed name", "pass --full-name")
    check_new_password(password, admin, settings.password)

    created_root = not layout.root.exists()
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.root, 0o700)
    except OSError as exc:  # a file in the way, a read-only disk, no permission
        raise InvalidInput(f"cannot create the appliance home {layout.root}: "
                           f"{exc.strerror or exc}", "choose another --home") from None
    made = [layout.keys, layout.db, layout.config]
    try:
        key = SigningKey.generate()
        key.save(layout.signing_key, layout.public_key)
        save_settings(layout.config, settings)
        conn = db.connect(layout.db, create=True)
        os.chmod(layout.db, 0o600)
        db.migrate(conn)
        appliance_id = str(uuid.uuid4())
        now = clock.iso()
        with db.transaction(conn):
            conn.execute("INSERT INTO meta (key, value) VALUES ('appliance_id', ?), "
                         "('created_at', ?), ('version', ?)", (appliance_id, now, __version__))
        conn.close()
        app = Appliance.open(layout.root, clock=clock, terminal=terminal)
        user = User(admin, full_name.strip(), FIRST_ADMIN_ROLES,
                    hash_password(password, settings.password.scrypt_n), now, False,
                    "active", now, "system")
        with app.transaction() as conn:
            app.trail.append(Event(
                action="appliance.init", actor=SYSTEM_ACTOR, target_type="appliance",
                target_id=appliance_id, reason="initial set-up",
                new={"appliance_id": appliance_id, "version": __version__,
                     "signing_key_id": key.key_id, "settings": settings.to_dict()},
                terminal=app.terminal))
            insert_user(conn, user)
            app.trail.append(Event(
                action="user.create", actor=SYSTEM_ACTOR,
                target_type="user", target_id=admin, reason="first administrator at set-up",
                new=user.public(), terminal=app.terminal))
        return app
    except BaseException:
        for path in made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                          path.with_name(path.name + ".tmp")):
                    p.unlink(missing_ok=True)
        if created_root:
            shutil.rmtree(layout.root, ignore_errors=True)
        raise
