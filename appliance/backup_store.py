"""The content store in a backup, and the releases a restore lays out again from it.

A backup holds every store object (each named by its SHA-256, checked as it is copied),
not the releases: those are hard links to the objects plus files generated from the
records (serving.json), so a restore lays out each current and kept release again with the
installer's own plan and layout, checks it against the signed digests, and points
`current` where the records say.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.backup_manifest import REFUSED
from appliance.bundle.store import ContentStore, StoreBusy
from appliance.context import Appliance
from appliance.durable import fsync_dir
from appliance.errors import ApplianceError, IntegrityError, InvalidInput
from appliance.hardware.profiles import EngineProfile
from appliance.updates import journal
from appliance.updates.install import generated, plan_release, release_dirs, release_problems
from appliance.updates.lifecycle import get_bundle
from appliance.updates.releases import InstallLock

STORE = "store"           # in a backup, as in a home: store/sha256/<ab>/<digest>
_BLOCK = 1 << 20


@dataclass(frozen=True)
class StoreCopy:
    """The objects a backup holds: their manifest digests (already hashed), count and bytes."""

    digests: dict[str, str]
    size: int


@dataclass(frozen=True)
class Rebuilt:
    """The releases a restore laid out again, and where `current` points."""

    releases: tuple[str, ...]
    current: str | None


@contextmanager
def still(app: Appliance) -> Iterator[None]:
    """Hold the install lock and the store's writer lock, so the database copy and the
    store copy agree: no release or object appears or goes meanwhile. An install that
    died half-way must be finished first, or the records would not say what is on disk."""
    with ExitStack() as stack:
        lock = InstallLock(app.layout.releases)
        if not lock.acquire():
            raise InvalidInput("another backup, or an install, rollback or recovery is "
                               "running",
                               "back up when it has finished")
        stack.callback(lock.release)
        entry = journal.open_entry(app.conn)
        if entry is not None:
            raise InvalidInput(f"an interrupted {entry.op} (journal {entry.id}) is not "
                               "finished", "run `appliance update status` first, then back up")
        try:
            stack.enter_context(ContentStore(app.layout.store).lock())
        except StoreBusy as exc:
            raise InvalidInput(exc.message, "back up when the import or reclaim has finished"
                               ) from None
        yield


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def copy_store(store: ContentStore, objects: list[tuple[str, int]], root: Path) -> StoreCopy:
    """Copy `objects` (the store's (digest, size) list) into `root`/store, hashing as it
    goes: an object whose bytes are not its name is damage, and no backup is made of it."""
    digests: dict[str, str] = {}
    size = 0
    for digest, _ in sorted(objects):
        rel = f"{STORE}/sha256/{digest[:2]}/{digest}"
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        got = _copy_hashing(store.path_of(digest), dest)
        if got != digest:
            raise IntegrityError(f"content-store object {digest[:16]}... is damaged (its bytes "
                                 f"hash to {got[:16]}...)",
                                 "no backup was made; report it to the security officer")
        os.chmod(dest, 0o444)
        digests[rel] = digest
        size += dest.stat().st_size
    for d in {p.parent for p in (root / r for r in digests)}:
        fsync_dir(d)
    return StoreCopy(digests, size)


def _copy_hashing(src: Path, dest: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        while block := fin.read(_BLOCK):
            h.update(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def objects_read_only(root: Path) -> None:
    """Objects are 0444 as the store writes them (a copy from a FAT stick reads 0644); the
    releases' hard links share the mode."""
    for path in (root / STORE).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o444)


def rebuild_releases(app: Appliance) -> Rebuilt:
    """Lay out every current and kept release from the restored store, verify each against
    its signed digests, and point `current` as the records say. Raises IntegrityError
    when an object a release needs is missing or a release does not verify."""
    store = ContentStore(app.layout.store)
    dirs = release_dirs(app)
    rows = app.conn.execute("SELECT bundle_id, path, profile, status FROM releases WHERE "
                            "status IN ('current', 'kept') ORDER BY id").fetchall()
    current = None
    for bundle_id, path, profile, status in rows:
        bundle = get_bundle(app.conn, bundle_id)
        plan = plan_release(app, bundle, EngineProfile.from_dict(json.loads(profile)), {},
                            rel=path)
        missing = [sha for _, sha, _ in plan.files if not store.has(sha)]
        if missing:
            raise IntegrityError(f"the backup lacks content-store object {missing[0][:16]}... "
                                 f"that release {path} needs", REFUSED)
        try:
            dirs.layout(path, 0, plan.files, generated(plan), lambda _label: None)
        except ApplianceError as exc:
            raise ApplianceError(f"could not lay out release {path} again: {exc.message}",
                                 "nothing was restored") from None
        problems = release_problems(dirs, path, plan)
        if problems:
            raise IntegrityError(f"release {path} laid out from the backup does not verify: "
                                 f"{problems[0]}", REFUSED)
        if status == "current":
            current = path
    if current is not None:
        dirs.switch(current)
    return Rebuilt(tuple(path for _, path, _, _ in rows), current)


def no_space(need: int, free: int, what: str) -> OSError:
    return OSError(errno.ENOSPC, f"not enough space for {what} (needs {mib(need)}, "
                                 f"{mib(free)} free)")
