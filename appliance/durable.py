"""Durable file writes: the one copy of the fsync-then-rename steps every writer needs."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part,
    and after a crash the new one survives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class StagedFile:
    """A file written under a temporary name beside `path`, renamed into place only on
    commit: the caller decides when (an export or an anchor renames once the event that
    records it has committed). The writer flushes and fsyncs what it writes. With
    `overwrite=False` the commit never replaces a file that appeared at `path` meanwhile
    (another export to the same name): it fails with FileExistsError instead."""

    def __init__(self, path: Path, overwrite: bool = True) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.overwrite = overwrite
        self.created = False
        self.committed = False

    def open(self) -> BinaryIO:
        f = open(self.tmp, "xb")  # never through a link or over a file someone else made
        self.created = True
        return f

    def commit(self) -> None:
        if self.overwrite:
            os.replace(self.tmp, self.path)
            self.committed = True
        else:
            self._commit_new()
        fsync_dir(self.path.parent)

    def _commit_new(self) -> None:
        """A hard link puts the file in place only if the name is free; on media without
        hard links (FAT) a check just before the rename narrows the window instead."""
        try:
            os.link(self.tmp, self.path)
        except FileExistsError:
            raise
        except OSError:
            if os.path.lexists(self.path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST),
                                      str(self.path)) from None
            os.replace(self.tmp, self.path)
            self.committed = True
            return
        self.committed = True
        self.tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove what this writer created, and nothing else."""
        if self.committed:
            self.path.unlink(missing_ok=True)
        elif self.created:
            self.tmp.unlink(missing_ok=True)
