"""Read-only access to a bundle on media: a directory or one uncompressed tar, never extracted.

Media is hostile until proven otherwise, so listing refuses anything that is not a plain
regular file at a plain relative path, and every later open re-checks the same rules.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from appliance.bundle.removable import find_bundles
from appliance.errors import BundleRefused
from appliance.text import shown

__all__ = ["MediaFile", "MediaSource", "DirectoryMedia", "TarMedia", "open_media",
           "find_bundles"]

# A real bundle holds tens of files; these bounds stop a hostile listing from eating memory.
MAX_FILES = 100_000
MAX_DEPTH = 32
MAX_NAME_BYTES = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO swapped in after listing cannot hang the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Media that cannot be opened any more (a stick pulled mid-import, a file removed) is not a
# badly signed bundle: what was copied and verified stays, and the next import resumes.
GONE_HINT = "check the media is still inserted and unchanged, then import again; it resumes"


@dataclass(frozen=True)
class MediaFile:
    relpath: str
    size: int


class MediaSource(Protocol):
    """A bundle directory or one uncompressed tar, listed once and read in place."""

    label: str

    def list_files(self) -> list[MediaFile]: ...

    def read_bytes(self, relpath: str, max_size: int) -> bytes: ...

    def open(self, relpath: str) -> BinaryIO: ...


def check_relpath(label: str, name: str, kind: str = "entry") -> str:
    """Return `name` as a plain POSIX relative path, or refuse it with the reason."""
    shown = ascii(name)
    if name.startswith("/"):
        raise BundleRefused(f"{label}: {kind} {shown} is an absolute path")
    while name.startswith("./"):
        name = name[2:]
    if not name:
        raise BundleRefused(f"{label}: {kind} {shown} has an empty path")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleRefused(f"{label}: {kind} {shown} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise BundleRefused(f"{label}: {kind} {shown[:80]}... has a path over "
                            f"{MAX_NAME_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in name):
        raise BundleRefused(f"{label}: {kind} {shown} contains a control character or "
                            "backslash")
    parts = name.split("/")
    if ".." in parts:
        raise BundleRefused(f"{label}: {kind} {shown} escapes the bundle (contains '..')")
    if "" in parts or "." in parts:
        raise BundleRefused(f"{label}: {kind} {shown} is not a normalised path")
    if len(parts) > MAX_DEPTH:
        raise BundleRefused(f"{label}: {kind} {shown} is nested over {MAX_DEPTH} levels")
    return name


class _Listing:
    """Collects file paths and refuses duplicates and paths that differ only by case.

    Case collisions matter because a FAT or exFAT stick, or a later copy to one, would merge
    them, so what was verified need not be what is installed.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.files: dict[str, int] = {}
        self._names: dict[str, tuple[str, bool]] = {}  # casefolded path -> (path, is_dir)

    def add(self, relpath: str, size: int) -> None:
        if len(self.files) >= MAX_FILES:
            raise BundleRefused(f"{self.label}: more than {MAX_FILES} files")
        parts = relpath.split("/")
        for i in range(1, len(parts) + 1):
            self._claim("/".join(parts[:i]), is_dir=i < len(parts))
        self.files[relpath] = size

    def add_dir(self, relpath: str) -> None:
        parts = relpath.split("/")
        for i in range(1, len(parts) + 1):
            self._claim("/".join(parts[:i]), is_dir=True)

    def _claim(self, path: str, is_dir: bool) -> None:
        seen = self._names.setdefault(path.casefold(), (path, is_dir))
        if seen == (path, is_dir) and is_dir:
            return
        if seen == (path, is_dir) and path not in self.files:
            return
        other, other_is_dir = seen
        if other != path:
            raise BundleRefused(f"{self.label}: paths {other!r} and {path!r} differ only by "
                                "case")
        if other_is_dir != is_dir:
            raise BundleRefused(f"{self.label}: {path!r} is both a file and a directory")
        raise BundleRefused(f"{self.label}: duplicate path {path!r}")

    def size_of(self, relpath: str) -> int:
        try:
            return self.files[relpath]
        except KeyError:
            raise BundleRefused(f"{self.label}: no file {relpath!r} on the media") from None


def _read_limited(label: str, relpath: str, stream: BinaryIO, max_size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    with stream:
        while got <= max_size and (chunk := stream.read(max_size + 1 - got)):
            chunks.append(chunk)
            got += len(chunk)
    if got > max_size:
        raise BundleRefused(f"{label}: {relpath!r} is over the {max_size}-byte limit")
    return b"".join(chunks)


class _ListedMedia(ABC):
    """What both media kinds share once their files are listed: `open` is theirs."""

    label: str
    _listing: _Listing

    @abstractmethod
    def open(self, relpath: str) -> BinaryIO: ...

    def list_files(self) -> list[MediaFile]:
        return [MediaFile(p, s) for p, s in sorted(self._listing.files.items())]

    def read_bytes(self, relpath: str, max_size: int) -> bytes:
        if self._listing.size_of(relpath) > max_size:
            raise BundleRefused(f"{self.label}: {relpath!r} is over the {max_size}-byte limit")
        return _read_limited(self.label, relpath, self.open(relpath), max_size)


class DirectoryMedia(_ListedMedia):
    """A bundle laid out as a directory tree. Symlinks anywhere below the root are refused."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # The path names the media in every refusal: a mount point or directory name can
        # carry any character (a volume label is the stick maker's), so it is escaped.
        self.label = shown(str(self.root))
        self._listing = _Listing(self.label)
        fd = self._open_root()
        try:
            self._walk(fd, "", 0)
        finally:
            os.close(fd)

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BundleRefused(f"{self.label}: cannot open the bundle directory "
                                f"({e.strerror})", GONE_HINT) from None

    def _walk(self, dir_fd: int, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BundleRefused(f"{self.label}: {prefix!r} is nested over {MAX_DEPTH} levels")
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = check_relpath(self.label, prefix + entry.name, "file")
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise BundleRefused(f"{self.label}: {rel!r} is a symbolic link")
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self._walk(sub, rel + "/", depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                self._listing.add(rel, st.st_size)
            else:
                raise BundleRefused(f"{self.label}: {rel!r} is a {_kind(st.st_mode)}, "
                                    "not a regular file")

    def open(self, relpath: str) -> BinaryIO:
        """Open by walking each component with O_NOFOLLOW, so a symlink swapped in after
        listing cannot redirect the read outside the bundle."""
        self._listing.size_of(relpath)
        parts = relpath.split("/")
        fd = self._open_root()
        try:
            for part in parts[:-1]:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as e:
            raise BundleRefused(f"{self.label}: cannot open {relpath!r} ({e.strerror})",
                                GONE_HINT) from None
        finally:
            os.close(fd)
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(file_fd)
            raise BundleRefused(f"{self.label}: {relpath!r} is no longer a regular file")
        _advise_sequential(file_fd, 0, 0)
        return open(file_fd, "rb", buffering=0)  # noqa: SIM115 - the caller closes it


class _MemberReader(io.RawIOBase):
    """One tar member read in place with pread, so threads never share a file position."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._start, self._size, self._pos = fd, offset, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        view = memoryview(buffer).cast("B")[:want]
        n = os.preadv(self._fd, [view], self._start + self._pos)
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class TarMedia(_ListedMedia):
    """A bundle as one uncompressed tar. Members are located by header, never extracted."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.label = shown(str(self.path))
        self._listing = _Listing(self.label)
        self._offsets: dict[str, int] = {}
        try:
            st = os.stat(self.path)
            with tarfile.open(self.path, mode="r:") as tar:
                self._scan(tar, st.st_size)
        except (tarfile.TarError, EOFError) as e:
            raise BundleRefused(f"{self.label}: not a readable uncompressed tar "
                                f"({shown(str(e))})") from None
        except OSError as e:
            raise BundleRefused(f"{self.label}: cannot read the tar ({e.strerror})") from None
        self._identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _scan(self, tar: tarfile.TarFile, tar_size: int) -> None:
        for member in _members(tar, self.label):
            if member.isdir() and member.name == ".":
                continue  # `tar -C DIR .` names the bundle root itself
            rel = check_relpath(self.label, member.name)
            if member.issym():
                raise BundleRefused(f"{self.label}: entry {rel!r} is a symbolic link")
            if member.islnk():
                raise BundleRefused(f"{self.label}: entry {rel!r} is a hard link")
            if member.ischr() or member.isblk():
                raise BundleRefused(f"{self.label}: entry {rel!r} is a device")
            if member.isfifo():
                raise BundleRefused(f"{self.label}: entry {rel!r} is a FIFO")
            if member.isdir():
                self._listing.add_dir(rel)
                continue
            if not member.isreg() or member.issparse():
                raise BundleRefused(f"{self.label}: entry {rel!r} is not a regular file "
                                    f"(tar type {member.type!r})")
            if member.offset_data + member.size > tar_size:
                raise BundleRefused(f"{self.label}: entry {rel!r} is truncated (the tar ends "
                                    "before its data)")
            self._listing.add(rel, member.size)
            self._offsets[rel] = member.offset_data

    def open(self, relpath: str) -> BinaryIO:
        size = self._listing.size_of(relpath)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise BundleRefused(f"{self.label}: cannot open the tar ({e.strerror})",
                                GONE_HINT) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._identity:
            os.close(fd)
            raise BundleRefused(f"{self.label}: the tar changed since it was listed", GONE_HINT)
        offset = self._offsets[relpath]
        _advise_sequential(fd, offset, size)
        return _MemberReader(fd, offset, size)  # type: ignore[return-value]


def _members(tar: tarfile.TarFile, label: str) -> Iterable[tarfile.TarInfo]:
    count = 0
    while (member := tar.next()) is not None:
        count += 1
        if count > MAX_FILES:
            raise BundleRefused(f"{label}: more than {MAX_FILES} entries")
        # Drop the member list tarfile keeps, so a long listing costs no memory.
        tar.members.clear()
        yield member


def _advise_sequential(fd: int, offset: int, length: int) -> None:
    # Read-ahead matters on USB sticks; the hint is harmless where unsupported.
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def open_media(path: Path) -> MediaSource:
    """Open a bundle directory or an uncompressed tar; refuse anything else."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise BundleRefused(f"{shown(str(path))}: cannot open the media ({e.strerror})",
                            "check the path and that the media is mounted") from None
    if stat.S_ISDIR(st.st_mode):
        return DirectoryMedia(path)
    if stat.S_ISREG(st.st_mode):
        return TarMedia(path)
    raise BundleRefused(f"{shown(str(path))}: neither a bundle directory nor a tar file")
