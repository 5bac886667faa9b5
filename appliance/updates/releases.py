"""Release directories on disk: layout from the content store, the `current` link, clean-up.

A release is built in a hidden `.partial` directory and renamed into
`releases/<name>/<version>/` only when complete, so a directory under its final name is
always whole. Files are hard links to content-store objects (no copy of weights); across
file systems a reflink, and only then a copy, which the placement counts say. `current` is
one relative symlink, replaced atomically (new link + rename over the old one).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.bundle.store import ContentStore
from appliance.durable import fsync_dir
from appliance.errors import IntegrityError, UpdateRefused
from appliance.text import shown
from appliance.updates.verification import sha256_file

CURRENT = "current"
FICLONE = 0x40049409       # linux/fs.h: _IOW(0x94, 9, int)
LOCK = ".install.lock"


@dataclass
class Placement:
    """How the release's files were placed; copies are named so nobody mistakes them."""

    hardlink: int = 0
    reflink: int = 0
    copy: int = 0
    copied_bytes: int = 0
    cross_filesystem: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InstallLock:
    """One install, rollback or recovery at a time; the kernel drops it if the holder dies,
    so a held lock means a live installer, and a free lock with an open journal a dead one."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self.fd = -1

    def acquire(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:      # releases/ a file, or not this user's: damage, one line
            root = self.path.parent
            why = f"{root} is not a directory" if root.exists() and not root.is_dir() else \
                exc.strerror or str(exc)
            raise IntegrityError(f"cannot open the install lock {self.path}: {why}",
                                 f"{self.path.parent} must be a directory the appliance may "
                                 "write; report it to the security officer") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            return False
        return True

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class ReleaseDirs:
    def __init__(self, root: Path, store: ContentStore) -> None:
        self.root = Path(root)
        self.store = store
        self.current = self.root / CURRENT

    def path_of(self, rel: str) -> Path:
        return self.root / rel

    def partial_of(self, rel: str, journal_id: int) -> Path:
        name, version = rel.split("/")
        return self.root / name / f".{version}.partial-{journal_id}"

    # --- the current link ---------------------------------------------------------------

    def read_current(self) -> str | None:
        """Where `current` points (None: there is no `current`). Anything else in its place
        (a directory, a file) is damage no install made: IntegrityError, never switched over."""
        try:
            return os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError:
            raise IntegrityError(self.current_problem() or f"{self.current} cannot be read",
                                 "move it out of releases/ (nothing the appliance made is "
                                 "there), then run `appliance update status`") from None

    def current_problem(self) -> str | None:
        """Why `current` is not a link (None: it is one, or there is none)."""
        if self.current.is_symlink() or not os.path.lexists(self.current):
            return None
        kind = "a directory" if self.current.is_dir() else "a file"
        return f"{self.current} is {kind} where the link to the running release belongs"

    def current_oddity(self, known: Collection[str]) -> str | None:
        """Why the link `current` is not one an install made (None: it is, or there is none
        or no link): it leads out of releases/, to no release directory, or to one the
        records do not hold (`known`: the current and kept releases). Switching over it
        would lose what it shows, and an undo would put it back."""
        if not self.current.is_symlink():
            return None
        target = os.readlink(self.current)
        where = f"{self.current} points to {shown(target)}"
        inside = os.path.realpath(self.root)   # realpath, not resolve: a loop is no error
        real = os.path.realpath(self.current)
        if os.path.commonpath([inside, real]) != inside:
            return f"{where}, outside {self.root}"
        if not os.path.isdir(real):
            return f"{where}, which is no release directory"
        if os.path.relpath(real, inside) not in known:
            return f"{where}, a release the records do not hold"
        return None

    def switch(self, target: str | None) -> None:
        """Point `current` at `target` (relative to releases/), or remove it, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        if target is None:
            try:
                os.unlink(self.current)
            except FileNotFoundError:
                pass
        else:
            tmp = self.root / f".current.tmp-{os.getpid()}"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            try:
                os.symlink(target, tmp)
                os.replace(tmp, self.current)
            except OSError:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        fsync_dir(self.root)

    # --- layout -------------------------------------------------------------------------

    def layout(self, rel: str, journal_id: int, files: list[tuple[str, str, int]],
               extra: dict[str, bytes], point: Callable[[str], None]) -> Placement:
        """Build the release in a partial directory, then rename it into place.

        Raises UpdateRefused (after removing the partial directory) when the disk is full
        or would be: a copy across file systems is checked against free space first.
        """
        final, partial = self.path_of(rel), self.partial_of(rel, journal_id)
        if final.exists():
            raise UpdateRefused(f"release directory {rel} already exists",
                                "run `appliance update status` to clean up, then retry")
        self._check_objects(rel, files)
        placement = Placement()
        try:
            if partial.exists():
                shutil.rmtree(partial)
            partial.mkdir(parents=True)
            placement.cross_filesystem = os.stat(self.store.objects).st_dev != \
                os.stat(partial).st_dev
            if placement.cross_filesystem:
                self._check_space(partial, files)
            dirs = {partial}
            for relpath, sha, _size in files:
                dest = partial / relpath
                if dest.parent not in dirs:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dirs.add(dest.parent)
                self._place(self.store.path_of(sha), dest, placement)
                point(f"layout:{relpath}")
            for name, data in extra.items():
                _write_file(partial / name, data)
                point(f"layout:{name}")
            for d in sorted(dirs, key=lambda p: -len(p.parts)):
                fsync_dir(d)
            os.rename(partial, final)
            fsync_dir(final.parent)
        except OSError as exc:
            _drop(partial)
            if disk_full(exc):
                raise UpdateRefused(f"the disk holding {self.root} is full while laying out "
                                    f"release {rel}",
                                    "free disk space and install again; nothing was switched"
                                    ) from None
            raise UpdateRefused(f"could not lay out release {rel}: {exc.strerror or exc}",
                                "nothing was switched; check the appliance home") from None
        except BaseException:
            _drop(partial)
            raise
        return placement

    def _check_objects(self, rel: str, files: list[tuple[str, str, int]]) -> None:
        """Every object the release needs is in the store at its signed size (a stat each;
        the bytes are hashed by the health check): a damaged store is named, not an ENOENT."""
        bad = []
        for relpath, sha, size in files:
            try:
                if os.stat(self.store.path_of(sha)).st_size == size:
                    continue
            except FileNotFoundError:
                pass
            bad.append(f"{relpath} ({sha[:12]})")
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise UpdateRefused(
                f"the content store lacks or holds a damaged copy of {bad[0]}{more}, needed "
                f"by release {rel}",
                "nothing was switched; the store is damaged: report it to the security "
                "officer and restore it from a backup (`appliance backup restore`)")

    def _check_space(self, partial: Path, files: list[tuple[str, str, int]]) -> None:
        need = sum({sha: size for _, sha, size in files}.values())
        fs = os.statvfs(partial)
        free = fs.f_bavail * fs.f_frsize
        if need > free:
            raise UpdateRefused(
                f"not enough space for the release in {self.root}: it is on another file "
                f"system than the content store, so files must be copied (needs "
                f"{need / (1 << 20):.1f} MiB, {free / (1 << 20):.1f} MiB free)",
                "free disk space, or keep releases/ on the content store's file system; "
                "nothing was switched")

    @staticmethod
    def _place(src: Path, dest: Path, placement: Placement) -> None:
        try:
            os.link(src, dest)
            placement.hardlink += 1
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                placement.reflink += 1
            except OSError:
                shutil.copyfileobj(fin, fout, 4 << 20)
                placement.copy += 1
                placement.copied_bytes += os.fstat(fin.fileno()).st_size
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(dest, 0o444)

    # --- checks and clean-up -----------------------------------------------------------

    def verify(self, rel: str, files: list[tuple[str, str, int]],
               generated: Mapping[str, bytes]) -> list[str]:
        """Problems with a laid-out release against the signed digests (empty: whole).
        `generated` holds the files made from the records (`serving.json`), each of which
        must be exactly what the records make (it says which model, engine and adapters
        are served, so an edited one is a different release)."""
        root = self.path_of(rel)
        if not root.is_dir():
            return [f"release directory {rel} is missing"]
        problems = []
        expected = {relpath: (sha, size) for relpath, sha, size in files}
        for relpath, (sha, size) in expected.items():
            path = root / relpath
            try:
                if path.is_symlink() or path.stat().st_size != size:
                    problems.append(f"{relpath}: wrong size or not a regular file")
                elif sha256_file(path) != sha:
                    problems.append(f"{relpath}: does not match its signed SHA-256")
            except FileNotFoundError:
                problems.append(f"{relpath}: missing")
        for path in root.rglob("*"):
            if path.is_file() or path.is_symlink():
                name = path.relative_to(root).as_posix()
                if name not in expected and name not in generated:
                    problems.append(f"{name}: not part of the signed bundle")
        for name, content in generated.items():
            path = root / name
            if path.is_symlink() or not path.is_file():
                problems.append(f"{name}: missing")
            elif path.read_bytes() != content:
                problems.append(f"{name}: not the one generated from the records (edited)")
        return problems

    def remove(self, rel: str) -> None:
        """Delete a release: renamed away first, so no half-deleted release keeps its name."""
        path = self.path_of(rel)
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
        os.rename(path, trash)
        fsync_dir(path.parent)
        _drop(trash)

    def sweep(self, keep: set[str]) -> list[str]:
        """Remove everything under releases/ that no kept release, current link or open
        install owns: partial layouts, trash, stale temporary links. Hold the install lock.
        What `current` leads to stays even if the records do not hold it: that is damage
        to report (`current_oddity`), not a leftover to delete from under the link."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        keep = set(keep) | self._current_release()
        for entry in sorted(self.root.iterdir()):
            if entry.name in (CURRENT, LOCK):
                continue
            if entry.name.startswith(".current.tmp-"):
                entry.unlink()
                removed.append(entry.name)
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            for sub in sorted(entry.iterdir()):
                rel = f"{entry.name}/{sub.name}"
                if rel not in keep:
                    if sub.is_dir() and not sub.is_symlink():
                        shutil.rmtree(sub, ignore_errors=True)
                    else:
                        sub.unlink()
                    removed.append(rel)
            if not any(entry.iterdir()):
                entry.rmdir()
        if removed:
            fsync_dir(self.root)
        return removed


    def _current_release(self) -> set[str]:
        """`name/version` of the release directory the link `current` leads into, if any."""
        if not self.current.is_symlink():
            return set()
        inside = os.path.realpath(self.root)
        parts = Path(os.path.relpath(os.path.realpath(self.current), inside)).parts
        return {"/".join(parts[:2])} if len(parts) >= 2 and parts[0] != ".." else set()


def _drop(path: Path) -> None:
    """Remove a directory tree and its parent if that is left empty (releases/<name>/)."""
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass    # not empty (other versions), or already gone: both fine


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
