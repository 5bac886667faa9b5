"""Backups of the appliance (11.10(c)), proven by a signed manifest and the chain.

A backup is a directory: a consistent copy of the database (SQLite's online backup API,
taken while others keep writing), the keys, the settings, the content store's objects, an
anchor of the newest checkpoint, and a manifest of every file's SHA-256 signed by the
appliance key. Verifying a backup checks the manifest (every file, nothing more or less: it
covers the state tables, settings and objects the chain does not), then re-runs the full
chain verification on the copy against the anchor, so a restored appliance is known to hold
exactly the records it had; a restore then lays out its releases again from the objects.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance import backup_manifest, backup_store
from appliance.audit.checkpoint import (
    Checkpoint,
    anchor_document,
    latest,
    read_anchor,
    write_anchor,
)
from appliance.audit.events import Actor, Event
from appliance.audit.verify import VerifyReport, verify_trail
from appliance.backup_manifest import REFUSED
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.db import damaged, unwritable
from appliance.durable import fsync_dir
from appliance.errors import (
    AlreadyInitialised,
    ApplianceError,
    AuthenticationFailed,
    IntegrityError,
    InvalidInput,
)
from appliance.home import HomeLayout
from appliance.identity.session import Session
from appliance.identity.users import get_user
from appliance.keys import load_public_pem
from appliance.provision import proctree
from appliance.services import auth
from appliance.services.access import authorize
from appliance.services.auth import typed_name
from appliance.settings import load_settings

ANCHOR = "anchor.json"
# Where a restore into an existing (empty) home builds it: inside, on the same file system.
STAGED = ".appliance-restoring"
# What `_move_up` moves into such a home before the database: a restore killed meanwhile
# leaves these beside the staged copy, and no database.
MOVED_UP = ("config.json", "keys", "releases", "store")
PROVISION_KEYS = "provision"  # under keys/: the inventory's SSH keys


@dataclass(frozen=True)
class BackupResult:
    path: Path
    events: int
    head_hash: str
    key_fingerprint: str
    objects: int = 0          # content-store objects held
    object_bytes: int = 0


@dataclass(frozen=True)
class BackupReport:
    """A verified backup: its chain report, the key that signed its manifest, its files."""

    trail: VerifyReport
    key_fingerprint: str
    files: tuple[str, ...]
    releases: tuple[str, ...] = ()   # laid out again by a restore
    current: str | None = None
    holds_store: bool = False        # made before backups held the store: records only

    @property
    def ok(self) -> bool:
        return self.trail.ok

    def to_dict(self) -> dict:
        return {**self.trail.to_dict(), "key_fingerprint": self.key_fingerprint,
                "files": list(self.files), "releases": list(self.releases),
                "current": self.current}


def create_backup(app: Appliance, session: Session, to: Path) -> BackupResult:
    """Write a backup directory at `to` (must not exist); keep it as safe as the appliance.
    It is built beside `to` under a temporary name and renamed when whole; media that
    cannot take it (unmounted, read-only, full) leaves nothing behind and is recorded."""
    actor = authorize(app, session, "backup.create", target_type="appliance",
                      target_id=app.appliance_id)
    to = Path(to)
    if os.path.lexists(to):  # a link too: the copy, key and all, is never put through one
        raise InvalidInput(f"{to} already exists", "choose a new directory for the backup")
    if not to.parent.is_dir():
        raise InvalidInput(f"directory {to.parent} does not exist",
                           "mount the backup media, or choose another --to")
    if to.parent.resolve().is_relative_to(app.layout.root.resolve()):
        # A copy inside what it copies is lost with it, and a later backup copies it again.
        raise InvalidInput(f"{to} is inside the appliance home {app.layout.root}",
                           "back up to other media, outside the appliance home")
    # No install, import or reclaim meanwhile: the records copied and the objects copied
    # must agree. A busy appliance is refused before anything is recorded.
    with backup_store.still(app):
        # The start is recorded first, with a checkpoint, so that the backup holds both;
        # the result is recorded once the copy is whole, before it takes its name.
        with app.transaction():
            app.trail.append(Event(action="backup.start", actor=actor,
                                   target_type="appliance", target_id=app.appliance_id,
                                   details={"to": str(to)}, terminal=session.terminal))
            app.trail.checkpoint("backup")
        removed = _remove_abandoned(to)
        if removed:
            with app.transaction():
                app.trail.append(Event(
                    action="backup.partial_removed", actor=actor, target_type="appliance",
                    target_id=app.appliance_id, details={"to": str(to), "removed": removed},
                    terminal=session.terminal))
        return _build(app, session, actor, to)


def _remove_abandoned(to: Path) -> list[str]:
    """The half-built copies that backups to `to` killed on this machine left beside it
    (`_build`'s names): each holds a copy of the signing key, so the next backup there
    removes it. One whose process still runs is another backup's, and is left alone."""
    removed = []
    for partial in sorted(to.parent.glob(f".{glob.escape(to.name)}.*-*.partial")):
        pid = partial.name[len(to.name) + 2:].split("-", 1)[0]
        if not pid.isdigit() or proctree.alive(int(pid), None):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial.name)
    return removed


def _build(app: Appliance, session: Session, actor: Actor, to: Path) -> BackupResult:
    # A name of its own: two backups to one --to must not build in, or remove, each other's.
    tmp = to.with_name(f".{to.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        cp, objects = _write_backup(app, tmp)
        if to.exists():  # made meanwhile (another backup to the same --to)
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(to))
        with app.transaction():
            app.trail.append(Event(
                action="backup.create", actor=actor, target_type="appliance",
                target_id=app.appliance_id, details={
                    "to": str(to), "tree_size": cp.tree_size, "head_hash": cp.head_hash,
                    "key_id": app.key.key_id, "store_objects": len(objects.digests),
                    "store_bytes": objects.size}, terminal=session.terminal))
        os.replace(tmp, to)
    except (OSError, IntegrityError) as exc:  # the media, or a damaged store object
        shutil.rmtree(tmp, ignore_errors=True)
        with app.transaction():
            app.trail.append(Event(
                action="backup.create", actor=actor, target_type="appliance",
                target_id=app.appliance_id, outcome="failure",
                details={"to": str(to), "error": str(exc)}, terminal=session.terminal))
        if isinstance(exc, IntegrityError):
            raise
        raise ApplianceError(f"could not write the backup to {to}: {exc.strerror or exc}",
                             "check that the backup media is mounted, writable and not full"
                             ) from exc
    except BaseException:  # the result could not be recorded, or Ctrl-C: no backup
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BackupResult(to, cp.tree_size, cp.head_hash, app.key.key_id,
                        len(objects.digests), objects.size)


def _write_backup(app: Appliance, tmp: Path) -> tuple[Checkpoint, backup_store.StoreCopy]:
    """The database (online backup), keys, settings, the store's objects, an anchor and the
    signed manifest, into `tmp`. The copy is switched out of WAL so that it is one
    self-contained file that a read-only open adds nothing beside (a -wal or -shm would not
    match the manifest). The media's free space is checked before anything is copied."""
    shutil.rmtree(tmp, ignore_errors=True)
    layout = HomeLayout(tmp)
    # Private from the start (a mode after the fact leaves a moment in which another account
    # could open the directory and, through it, the key's copy), whatever the umask.
    tmp.mkdir(mode=0o700)
    layout.keys.mkdir(mode=0o700)
    os.chmod(tmp, 0o700)
    store = ContentStore(app.layout.store)
    held = store.objects_on_disk()  # listed once: sized here, copied below
    need = sum(size for _, size in held) + sum(  # the database, as much as its WAL holds
        p.stat().st_size for p in (app.layout.db, app.layout.db.with_name(
            app.layout.db.name + "-wal")) if p.exists())
    free = backup_store.free_bytes(tmp)
    if need > free:
        raise backup_store.no_space(need, free, "the backup")
    dest = sqlite3.connect(layout.db)
    try:
        app.conn.backup(dest)
        dest.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:  # the copy's disk: full, read-only
        raise OSError(f"the database copy failed: {exc}") from exc
    finally:
        dest.close()
    os.chmod(layout.db, 0o600)
    for src in (app.layout.signing_key, app.layout.public_key):
        shutil.copy2(src, layout.keys / src.name)
    # The SSH keys `provision inventory add` copied in: the inventory's hosts name them.
    ssh_keys = sorted(p for p in (app.layout.keys / PROVISION_KEYS).glob("*")
                      if p.is_file() and not p.is_symlink())
    if ssh_keys:
        (layout.keys / PROVISION_KEYS).mkdir(mode=0o700)
        for src in ssh_keys:
            shutil.copy2(src, layout.keys / PROVISION_KEYS / src.name)
    if app.layout.config.exists():
        shutil.copy2(app.layout.config, layout.config)
    objects = backup_store.copy_store(store, held, tmp)
    _private_modes(layout)
    reader = sqlite3.connect(f"file:{layout.db}?mode=ro", uri=True)
    try:
        cp = latest(reader)
    finally:
        reader.close()
    assert cp is not None
    write_anchor(anchor_document(cp, app.key), tmp / ANCHOR)
    backup_manifest.seal(tmp, app.key, {"appliance_id": app.appliance_id,
                                        "tree_size": cp.tree_size, "head_hash": cp.head_hash,
                                        "store_objects": len(objects.digests)},
                         known=objects.digests)
    return cp, objects


def _private_modes(layout: HomeLayout) -> None:
    """The modes `init` gives: keys/ 0700, the private keys and the database 0600. A copy
    takes its modes from the backup, and a backup kept on a FAT stick or a share reads as
    0644 or 0755 whatever it was written with: the modes are set, never copied."""
    ssh = layout.keys / PROVISION_KEYS
    ssh_keys = [(p, 0o600) for p in ssh.glob("*")] if ssh.is_dir() else []
    for path, mode in ((layout.keys, 0o700), (layout.signing_key, 0o600), (layout.db, 0o600),
                       (ssh, 0o700), *ssh_keys):
        if path.exists() and not path.is_symlink():  # what is there, the manifest checks
            os.chmod(path, mode)


def _require_backup(layout: HomeLayout, shown: Path) -> None:
    if not layout.db.is_file() or not (layout.root / ANCHOR).is_file():
        raise InvalidInput(f"{shown} is not an appliance backup", "pass a backup directory")


def _check_settings(layout: HomeLayout, shown: Path) -> None:
    """The settings must load, or the restored appliance would not open."""
    try:
        load_settings(layout.config)
    except InvalidInput as exc:
        raise IntegrityError(f"the settings in backup {shown} do not load: {exc.message}",
                             REFUSED) from exc
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8 (InvalidInput is not one)
        raise IntegrityError(f"the settings in backup {shown} are unreadable ({exc})",
                             REFUSED) from exc


def verify_backup(path: Path, expect_fingerprint: str | None = None,
                  shown: Path | None = None) -> BackupReport:
    """Check the signed manifest (every file, nothing extra), that the settings load, and
    the full chain against the backup's anchor. `shown`: the name to report (a restore
    verifies its own copy)."""
    layout = HomeLayout(Path(path))
    shown = Path(path) if shown is None else shown
    _require_backup(layout, shown)
    sealed = backup_manifest.check(layout.root, shown, expect_fingerprint)
    _check_settings(layout, shown)
    anchor = read_anchor(layout.root / ANCHOR)
    key = load_public_pem(layout.public_key.read_bytes())
    conn = sqlite3.connect(f"file:{layout.db}?mode=ro", uri=True)
    try:
        return BackupReport(verify_trail(conn, key, anchor), sealed.key_fingerprint,
                            sealed.files, holds_store=sealed.holds_store)
    except sqlite3.DatabaseError as exc:
        if damaged(exc) is None:
            raise
        raise IntegrityError(f"the backup {shown} is damaged ({exc})", REFUSED) from exc
    finally:
        conn.close()


def check_restore_target(root: Path) -> None:
    """Only a new or empty directory may be restored into: nothing there is overwritten.
    Empty means as `appliance init` takes it: `lost+found` aside (the home may be its own
    file system), and what a killed restore staged or had begun to move up there."""
    if HomeLayout(root).db.exists():
        raise AlreadyInitialised(f"an appliance already exists at {root}")
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise InvalidInput(f"{root} is not a directory", "choose a new or empty --home")
    if root.is_dir() and root.stat().st_uid != os.geteuid():  # its owner could swap keys/
        raise InvalidInput(f"{root} belongs to another account (uid {root.stat().st_uid})",
                           "restore into a directory this account owns, or a new one")
    left = {p.name for p in _moved_up(root)}
    if root.is_dir() and any(n not in ("lost+found", STAGED, *left) for n in os.listdir(root)):
        raise InvalidInput(f"{root} is not empty", "restore into a new or empty --home")
    if not root.parent.is_dir():
        raise InvalidInput(f"directory {root.parent} does not exist",
                           "create it, or choose another --home")


def _moved_up(root: Path) -> list[Path]:
    """What a restore killed while it moved its copy up left in `root`: the staged copy is
    still there and the database, moved last, is not (so `root` opens as no appliance). A
    restore run again removes them with the staged copy and starts over."""
    if not (root / STAGED).is_dir() or HomeLayout(root).db.exists():
        return []
    return [root / n for n in MOVED_UP if os.path.lexists(root / n)]


def _precheck_password(db: Path, username: str, password: str) -> None:
    """A wrong name or password, refused before the backup is copied and verified (which
    takes as long as its content store); read only, so nothing is counted or recorded: the
    login that counts (lockout, the recorded event) is the one in the verified copy. A
    database that cannot be read here is left for verification to report."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
        try:
            user = get_user(conn, typed_name(username))
        finally:
            conn.close()
    except (sqlite3.Error, ApplianceError, ValueError, TypeError):
        return
    if user is None or not auth.credentials_match(user, password):
        raise AuthenticationFailed("login failed: unknown user or wrong password")


def restore_backup(backup: Path, home: Path, username: str, password: str,
                   expect_fingerprint: str | None = None, terminal: str | None = None
                   ) -> BackupReport:
    """Restore into a new or empty home, only if the backup verifies completely, on behalf
    of a person who logs in with an account the backup holds (IT or security: there is no
    other appliance to log in to) and is named as the restore's actor.

    Everything happens in a copy, verified there (what is checked is what is restored) and
    opened there to log in and record backup.restore. A new home is that copy, built beside it and
    renamed into place. An existing empty home may be a mount point (its own partition),
    which no rename can replace: the copy is built inside it and its files moved up, the
    database last, so a restore killed half-way leaves no home that opens. Any failure
    removes the copy: the restore ends whole or leaves nothing."""
    backup, root = Path(backup), Path(home)
    check_restore_target(root)
    _require_backup(HomeLayout(backup), backup)  # before copying what may not be one
    _precheck_password(HomeLayout(backup).db, username, password)
    into = root.is_dir()
    for path in _moved_up(root) if into else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    _check_space(backup, root if into else root.parent, root)
    tmp = root / STAGED if into else root.with_name(root.name + ".restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(backup, tmp, symlinks=True)
        os.chmod(tmp, 0o700)
        _private_modes(HomeLayout(tmp))
        backup_store.objects_read_only(tmp)
        report = verify_backup(tmp, expect_fingerprint, shown=backup)
        if not report.ok:
            raise IntegrityError(
                f"backup {backup} does not verify: {report.trail.first_finding.message}")
        (tmp / ANCHOR).unlink()
        (tmp / backup_manifest.MANIFEST).unlink()
        app = Appliance.open(tmp, terminal=terminal)
        try:
            session = auth.login(app, username, password)
            actor = authorize(app, session, "backup.restore", target_type="appliance",
                              target_id=app.appliance_id)
            report = _restore_releases(app, backup, report, root, actor)
        finally:
            app.close()
        if into:
            _move_up(tmp, root)
        else:
            os.replace(tmp, root)
        fsync_dir(root.parent)
    except (OSError, sqlite3.OperationalError) as exc:
        # sqlite3: opening the copy (its -wal and -shm) or writing to it on a disk that the
        # copy fitted but its growth does not.
        if isinstance(exc, sqlite3.OperationalError) and not unwritable(exc):
            raise
        raise ApplianceError(f"could not restore into {root}: {_why(exc)}",
                             "check that its disk is writable and not full; nothing was "
                             "restored") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _restore_releases(app: Appliance, backup: Path, report: BackupReport, root: Path,
                      actor: Actor) -> BackupReport:
    """Lay out the releases the records name from the restored store, point the
    inventory's SSH keys at their restored copies under `root`, then record the restore. A
    backup made before backups held the store brings back the records only."""
    rebuilt = backup_store.rebuild_releases(app) if report.holds_store else None
    report = dataclasses.replace(report, releases=rebuilt.releases if rebuilt else (),
                                 current=rebuilt.current if rebuilt else None)
    with app.transaction():
        moved = _move_ssh_keys(app, root)
        app.trail.append(Event(
            action="backup.restore", actor=actor, target_type="appliance",
            target_id=app.appliance_id, reason="restored from backup",
            details={"from": str(backup), "events": report.trail.events_checked,
                     "head_hash": report.trail.head_hash,
                     "key_fingerprint": report.key_fingerprint,
                     "store": report.holds_store, "releases": list(report.releases),
                     "current": report.current, "ssh_keys_moved": moved},
            terminal=app.terminal))
    return report


def _move_ssh_keys(app: Appliance, root: Path) -> dict[str, str]:
    """Hosts name their SSH key by its path in the home it was added to
    (`<home>/keys/provision/<file>`): restored elsewhere, that path is another disk's, or
    nothing. Each such host is pointed at its restored copy in `root`; returns
    {host: new path}. Inside the restore's transaction."""
    moved: dict[str, str] = {}
    restored = app.layout.keys / PROVISION_KEYS  # the copy being restored, at its staging path
    for name, key_file in app.conn.execute(
            "SELECT name, key_file FROM provision_hosts WHERE key_file IS NOT NULL").fetchall():
        old = Path(key_file)
        new = root / "keys" / PROVISION_KEYS / old.name
        if old.parent.name == PROVISION_KEYS and old.parent.parent.name == "keys" and \
                old != new and (restored / old.name).is_file():
            app.conn.execute("UPDATE provision_hosts SET key_file = ? WHERE name = ?",
                             (str(new), name))
            moved[name] = str(new)
    return moved


def _check_space(backup: Path, where: Path, root: Path) -> None:
    """Refuse before copying when the backup does not fit (its releases come back as hard
    links to the objects, so the backup's own size is what a restore needs)."""
    need = sum(os.lstat(Path(d) / f).st_size for d, _, fs in os.walk(backup) for f in fs)
    free = backup_store.free_bytes(where)
    if need > free:
        raise ApplianceError(f"not enough space to restore into {root} (needs "
                             f"{backup_store.mib(need)}, {backup_store.mib(free)} free)",
                             "free disk space, or restore onto a larger disk; nothing was "
                             "restored")


def _move_up(tmp: Path, root: Path) -> None:
    """Move the verified copy's entries from `tmp` into `root` (same file system), the
    database last: until it is there, `root` is no appliance. A failure takes back what
    was moved."""
    db = HomeLayout(tmp).db.name
    moved: list[Path] = []
    try:
        for name in [*sorted(n for n in os.listdir(tmp) if n != db), db]:
            os.rename(tmp / name, root / name)
            moved.append(root / name)
        os.chmod(root, 0o700)
        fsync_dir(root)
    except OSError:
        for path in reversed(moved):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _why(exc: OSError) -> str:
    """One line for a failed copy: copytree's shutil.Error lists every file that failed
    (on a full disk, all of them), so only the first is told."""
    errors = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
    if isinstance(errors, list) and errors and len(errors[0]) == 3:
        return str(errors[0][2])
    return getattr(exc, "strerror", None) or str(exc)
