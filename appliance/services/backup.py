"""Backups of the appliance's records (11.10(c)), proven by the audit chain on restore.

A backup is a directory: a consistent copy of the database (SQLite's online backup API,
taken while others keep writing), the keys, the settings, and an anchor of the newest
checkpoint. Verifying a backup re-runs the full chain verification on the copy against that
anchor, so a restored appliance is known to hold exactly the records it had.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.audit.checkpoint import (
    Checkpoint,
    anchor_document,
    latest,
    read_anchor,
    write_anchor,
)
from appliance.audit.events import SYSTEM_ACTOR, Event
from appliance.audit.verify import VerifyReport, verify_trail
from appliance.context import Appliance
from appliance.db import damaged
from appliance.errors import AlreadyInitialised, ApplianceError, IntegrityError, InvalidInput
from appliance.home import HomeLayout
from appliance.identity.session import Session
from appliance.keys import load_public_pem
from appliance.services.access import authorize

ANCHOR = "anchor.json"


@dataclass(frozen=True)
class BackupResult:
    path: Path
    events: int
    head_hash: str


def create_backup(app: Appliance, session: Session, to: Path) -> BackupResult:
    """Write a backup directory at `to` (must not exist); keep it as safe as the appliance.
    It is built beside `to` under a temporary name and renamed when whole; media that
    cannot take it (unmounted, read-only, full) leaves nothing behind and is recorded."""
    actor = authorize(app, session, "backup.create", target_type="appliance",
                      target_id=app.appliance_id)
    to = Path(to)
    if to.exists():
        raise InvalidInput(f"{to} already exists", "choose a new directory for the backup")
    if not to.parent.is_dir():
        raise InvalidInput(f"directory {to.parent} does not exist",
                           "mount the backup media, or choose another --to")
    with app.transaction():
        app.trail.append(Event(action="backup.create", actor=actor, target_type="appliance",
                               target_id=app.appliance_id, details={"to": str(to)},
                               terminal=session.terminal))
        app.trail.checkpoint("backup")
    tmp = to.with_name(to.name + ".partial")
    try:
        cp = _write_backup(app, tmp)
        os.replace(tmp, to)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        with app.transaction():
            app.trail.append(Event(
                action="backup.create", actor=actor, target_type="appliance",
                target_id=app.appliance_id, outcome="failure",
                details={"to": str(to), "error": str(exc)}, terminal=session.terminal))
        raise ApplianceError(f"could not write the backup to {to}: {exc.strerror or exc}",
                             "check that the backup media is mounted, writable and not full"
                             ) from exc
    return BackupResult(to, cp.tree_size, cp.head_hash)


def _write_backup(app: Appliance, tmp: Path) -> Checkpoint:
    """The database (online backup), keys, settings and an anchor, into `tmp`."""
    shutil.rmtree(tmp, ignore_errors=True)
    layout = HomeLayout(tmp)
    layout.keys.mkdir(parents=True)
    os.chmod(tmp, 0o700)
    dest = sqlite3.connect(layout.db)
    try:
        app.conn.backup(dest)
    except sqlite3.Error as exc:  # the copy's disk: full, read-only
        raise OSError(f"the database copy failed: {exc}") from exc
    finally:
        dest.close()
    os.chmod(layout.db, 0o600)
    for src in (app.layout.signing_key, app.layout.public_key):
        shutil.copy2(src, layout.keys / src.name)
    if app.layout.config.exists():
        shutil.copy2(app.layout.config, layout.config)
    reader = sqlite3.connect(layout.db)
    try:
        cp = latest(reader)
    finally:
        reader.close()
    assert cp is not None
    write_anchor(anchor_document(cp, app.key), tmp / ANCHOR)
    return cp


def verify_backup(path: Path) -> VerifyReport:
    """Full chain verification of a backup against its own anchor and public key."""
    layout = HomeLayout(Path(path))
    if not layout.db.exists() or not (layout.root / ANCHOR).exists():
        raise InvalidInput(f"{path} is not an appliance backup", "pass a backup directory")
    anchor = read_anchor(layout.root / ANCHOR)
    key = load_public_pem(layout.public_key.read_bytes())
    conn = sqlite3.connect(f"file:{layout.db}?mode=ro", uri=True)
    try:
        return verify_trail(conn, key, anchor)
    except sqlite3.DatabaseError as exc:
        if damaged(exc) is None:
            raise
        raise IntegrityError(f"the backup {path} is damaged ({exc})",
                             "this backup cannot be restored; use another one") from exc
    finally:
        conn.close()


def restore_backup(backup: Path, home: Path) -> VerifyReport:
    """Restore into an empty home, only if the backup verifies completely."""
    report = verify_backup(backup)
    if not report.ok:
        raise IntegrityError(f"backup {backup} does not verify: {report.findings[0].message}")
    target = HomeLayout(Path(home))
    if target.db.exists():
        raise AlreadyInitialised(f"an appliance already exists at {target.root}")
    tmp = target.root.with_name(target.root.name + ".restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(backup, tmp)
    (tmp / ANCHOR).unlink()
    os.chmod(tmp, 0o700)
    if target.root.exists():
        target.root.rmdir()  # only an empty directory may be restored into
    os.replace(tmp, target.root)
    app = Appliance.open(target.root)
    try:
        with app.transaction():
            app.trail.append(Event(
                action="backup.restore", actor=SYSTEM_ACTOR, target_type="appliance",
                target_id=app.appliance_id, reason="restored from backup",
                details={"from": str(backup), "events": report.events_checked,
                         "head_hash": report.head_hash}, terminal=app.terminal))
    finally:
        app.close()
    return report


