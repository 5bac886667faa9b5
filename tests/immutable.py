"""A file made immutable for real (chattr +i), which stops root too: how tests running as
root, as in CI, make a write or an unlink fail."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` immutable until the block ends; a file system without the attribute skips
    the test (it cannot be made to fail there)."""
    fd = os.open(path, os.O_RDONLY)
    flags = array.array("l", [0])
    try:
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, array.array("l", [flags[0] | _FS_IMMUTABLE_FL]))
    except OSError as exc:
        os.close(fd)
        pytest.skip(f"this filesystem cannot make a file immutable ({exc})")
    try:
        yield
    finally:
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
        os.close(fd)
