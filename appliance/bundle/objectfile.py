"""Writes one store object's temporary file, bypassing the page cache where it can.

On the target, O_DIRECT writes ran at 1.5-1.7 GB/s against 0.8-1.1 GB/s for buffered
writes plus fsync, with far less CPU, and they leave no dirty pages for fsync to wait on.
File systems without O_DIRECT (tmpfs on older kernels, some FUSE) get buffered writes whose
write-back starts every 16 MiB.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

ALIGN = 4096  # O_DIRECT wants offsets, lengths and memory aligned to the logical block
WRITEBACK_CHUNK = 16 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def aligned_buffer(size: int) -> mmap.mmap:
    """Anonymous, page-aligned memory (a bytearray is not aligned enough for O_DIRECT)."""
    return mmap.mmap(-1, size)


class ObjectFile:
    """A new file written sequentially from an aligned buffer, then truncated and synced."""

    def __init__(self, path: Path, direct: bool = True) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.size = 0
        self._padded = False
        self._flushed = 0
        self.direct = False
        if direct and _O_DIRECT:
            # Set after open, so a file system that refuses it has not half-created the file.
            try:
                flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
                fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | _O_DIRECT)
                self.direct = True
            except OSError:
                pass

    def write(self, buf: memoryview, n: int) -> None:
        """Append `buf[:n]`. Only the last block of a file may be short: with O_DIRECT it is
        zero-padded to ALIGN (buf must have room) and `finish` truncates the padding."""
        data = buf[:n]
        if self.direct and n % ALIGN:
            end = n + (-n % ALIGN)
            buf[n:end] = bytes(end - n)
            data = buf[:end]
            self._padded = True
        while data:
            try:
                k = os.write(self.fd, data)
            except OSError as e:
                if e.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()  # this file system or device wants another alignment
                continue
            data = data[k:]
        self.size += n
        if not self.direct and self.size - self._flushed >= 2 * WRITEBACK_CHUNK:
            _start_writeback(self.fd, self._flushed, WRITEBACK_CHUNK)
            self._flushed += WRITEBACK_CHUNK

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
        self.direct = False

    def finish(self) -> None:
        """Drop any padding, make the file read-only and durable."""
        if self._padded:
            os.ftruncate(self.fd, self.size)
        os.fchmod(self.fd, 0o444)
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _start_writeback(fd: int, offset: int, length: int) -> None:
    # On Linux, DONTNEED on dirty pages starts their write-back without waiting (the
    # sync_file_range(2) that Python lacks) and drops them once clean; buffered writes that
    # piled up for fsync cost twice the CPU per GB on the target.
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
