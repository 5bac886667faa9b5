"""Content-addressed payload store: copies media files in while hashing them in one pass.

An object appears under its SHA-256 only after its bytes were hashed, matched, fsynced and
renamed into place, so anything found by `has()` is complete and verified; the store is
trusted on later imports and never re-hashed. Temporary files live in `tmp/` on the same
file system, and whatever a killed import left there is removed by the next one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from appliance.bundle.media import MediaSource
from appliance.bundle.objectfile import ALIGN, ObjectFile, aligned_buffer
from appliance.bundle.progress import ImportProgress, ProgressMeter
from appliance.durable import fsync_dir
from appliance.errors import ApplianceError, BundleRefused

__all__ = ["WantedFile", "ImportProgress", "IngestResult", "ContentStore", "StoreBusy",
           "StoreLock"]

BLOCK = 4 << 20  # 1-4 MiB reads keep hashlib at full speed; 8 MiB measured slower
# Measured on the 2-core target (tests/perf/bench_import.py --sweep, 2.2 GB, three runs):
# 3 workers were as fast as 2 or faster (a worker waiting on its read or write leaves a
# core to another), 4 slower, 1 about half; 2 vs 4 MiB blocks made no steady difference.
DEFAULT_WORKERS = 3
PROGRESS_INTERVAL = 0.1  # at most ~10 callbacks a second
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WantedFile:
    relpath: str
    sha256: str
    size: int


@dataclass(frozen=True)
class IngestResult:
    copied_bytes: int
    skipped_bytes: int
    files_copied: int
    files_skipped: int
    seconds: float


class StoreBusy(ApplianceError):
    exit_code = 9
    hint = "another import or reclaim is using the content store; wait for it to finish"


class ContentMismatch(BundleRefused):
    """The media's bytes differ from what was signed: the bundle is bad, not the media, so
    the import service removes what this import added instead of keeping it to resume."""


class _Cancelled(Exception):
    """Another worker failed or the caller was interrupted: stop without reporting."""


class ContentStore:
    """Objects at `root/sha256/ab/<digest>`, written only through `ingest`."""

    def __init__(self, root: Path, workers: int = DEFAULT_WORKERS, block_size: int = BLOCK,
                 direct: bool = True) -> None:
        if block_size <= 0 or block_size % ALIGN:
            raise ValueError(f"block_size must be a positive multiple of {ALIGN}")
        self.root = Path(root)
        self.objects = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.workers = max(1, workers)
        self.block_size = block_size
        self.direct = direct
        self._local = threading.local()

    def path_of(self, sha256: str) -> Path:
        if not _DIGEST.fullmatch(sha256):
            raise BundleRefused(f"{sha256!r} is not a lowercase hex SHA-256 digest")
        return self.objects / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def lock(self) -> StoreLock:
        """The store's writer lock, taken without waiting (StoreBusy if another process
        holds it). An import holds it from its copy until its bundle record commits, and a
        reclaim while it decides and removes, so neither sees the other half-way."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _store_error(e, f"content store {self.root}", _STORE_HINT) from None
        return StoreLock(self.root / ".lock")

    def objects_on_disk(self) -> list[tuple[str, int]]:
        """(digest, size) of every complete object; temporary files are not objects."""
        found = []
        try:
            shards = [e for e in os.scandir(self.objects) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for shard in shards:
            for entry in os.scandir(shard.path):
                if _DIGEST.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    found.append((entry.name, entry.stat(follow_symlinks=False).st_size))
        return found

    def discard(self, digests: list[str], held: StoreLock | None = None) -> int:
        """Remove objects (those a refused import added, or a reclaim chose); returns how
        many were removed. `held`: the caller's lock, already taken."""
        removed = 0
        with held or self.lock():
            for digest in digests:
                path = self.path_of(digest)
                if path.is_file():
                    path.unlink()
                    fsync_dir(path.parent)
                    removed += 1
        return removed

    def _present(self, wanted: WantedFile) -> bool:
        # A stat per file keeps a re-import nearly free. A wrong size can only be damage
        # from outside; copying again replaces it atomically.
        try:
            st = os.stat(self.path_of(wanted.sha256))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == wanted.size

    def ingest(self, media: MediaSource, files: list[WantedFile],
               progress: Callable[[ImportProgress], None] | None = None,
               held: StoreLock | None = None) -> IngestResult:
        """Copy every wanted file not yet present, verifying each against its digest and size.
        `held`: the caller's lock, already taken (else the copy takes it for itself).

        Raises BundleRefused at the first mismatch, truncation, read error or full disk, after
        removing every temporary file of this run; objects already completed stay (they are
        verified), so running again resumes.
        """
        started = time.monotonic()
        unique = _check_wanted(media, files)
        lock = held or self.lock()
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _store_error(e, f"content store {self.root}", _STORE_HINT) from None
        with lock:
            try:
                self._clean_tmp()
                todo = [w for w in unique if not self._present(w)]
                skipped = sum(w.size for w in unique) - sum(w.size for w in todo)
                self._check_space(media, todo)
            except OSError as e:
                raise _store_error(e, f"content store {self.root}", _STORE_HINT) from None
            meter = ProgressMeter(sum(w.size for w in unique), skipped, progress)
            self._run(media, todo, meter)
        return IngestResult(
            copied_bytes=sum(w.size for w in todo), skipped_bytes=skipped,
            files_copied=len(todo), files_skipped=len(unique) - len(todo),
            seconds=time.monotonic() - started)

    def _run(self, media: MediaSource, todo: list[WantedFile], meter: ProgressMeter) -> None:
        cancel = threading.Event()
        # Largest first, so one big file does not start last and run alone at the end.
        order = sorted(todo, key=lambda w: -w.size)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ingest")
        # Each copying worker keeps one block in flight on a writer thread of its own pool
        # while it reads and hashes the next, so the write hides under the hashing.
        writers = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ingest-w")
        run = _Run(media, meter, cancel, writers)
        try:
            # The first report comes before any copy starts, so a caller sees 0% (and can
            # cancel) before the media is touched.
            meter.report(force=True)
            futures: list[Future[None]] = [pool.submit(self._copy_one, run, w) for w in order]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=PROGRESS_INTERVAL,
                                     return_when=FIRST_EXCEPTION)
                meter.report()
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    cancel.set()
                    wait(pending)
                    raise _first_error(failed, futures)
            meter.report(force=True)
        except BaseException:
            # Ctrl-C or a callback error: stop the workers; each removes its own temp file.
            cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            writers.shutdown(wait=True)

    def _copy_one(self, run: _Run, wanted: WantedFile) -> None:
        media = run.media
        if run.cancel.is_set():
            raise _Cancelled
        tmp = self.tmp / f"{wanted.sha256}.{os.getpid()}.{threading.get_ident()}.part"
        final = self.path_of(wanted.sha256)
        label = f"{media.label}: {wanted.relpath!r}"
        try:
            out = ObjectFile(tmp, direct=self.direct)
        except OSError as e:
            raise _store_error(e, label) from None
        try:
            try:
                with media.open(wanted.relpath) as src:
                    digest = self._copy_stream(run, src, out, wanted, label)
                if digest != wanted.sha256:
                    raise ContentMismatch(
                        f"{label} does not match its signed SHA-256 "
                        f"(expected {wanted.sha256[:16]}..., got {digest[:16]}...)")
                out.finish()
            except OSError as e:
                raise _store_error(e, label) from None
        except BaseException:
            out.close()
            _unlink_quietly(tmp)
            raise
        out.close()
        try:
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                fsync_dir(self.objects)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except OSError as e:
            _unlink_quietly(tmp)
            raise _store_error(e, label) from None
        run.meter.finished(wanted.relpath)

    def _copy_stream(self, run: _Run, src: BinaryIO, out: ObjectFile, wanted: WantedFile,
                     label: str) -> str:
        """Read whole blocks, hash each, write the same bytes: the media is read once.

        Two buffers alternate: block i is written on a writer thread while block i+1 is read
        and hashed; a buffer is refilled only after its write has finished."""
        h = hashlib.sha256()
        buffers = self._buffers()
        remaining = wanted.size
        writing: Future[None] | None = None
        run.meter.started(wanted.relpath)
        try:
            for i in itertools.count():
                if not remaining:
                    break
                if run.cancel.is_set():
                    raise _Cancelled
                buf = buffers[i % 2]
                want = min(self.block_size, remaining)
                filled = 0
                while filled < want and (n := src.readinto(buf[filled:want])):
                    filled += n
                if not filled:
                    break
                h.update(buf[:filled])
                if writing is not None:
                    writing.result()  # keeps writes in order, and frees the other buffer
                writing = run.writers.submit(out.write, buf, filled)
                remaining -= filled
                run.meter.add(filled)
                if filled < want:
                    break
            if writing is not None:
                writing.result()
        finally:
            if writing is not None:
                wait([writing])  # never close or unlink under a write still running
        if remaining:
            raise ContentMismatch(f"{label} is truncated: {wanted.size - remaining} of "
                                f"{wanted.size} bytes")
        if src.readinto(bytearray(1)):
            raise ContentMismatch(f"{label} is longer than its signed size {wanted.size}")
        return h.hexdigest()

    def _buffers(self) -> tuple[memoryview, memoryview]:
        # Two aligned blocks per copying thread, reused for every file it copies.
        views = getattr(self._local, "buffers", None)
        if views is None:
            views = self._local.buffers = (memoryview(aligned_buffer(self.block_size)),
                                           memoryview(aligned_buffer(self.block_size)))
        return views

    def _check_space(self, media: MediaSource, todo: list[WantedFile]) -> None:
        need = sum(w.size for w in todo)
        if not need:
            return
        fs = os.statvfs(self.tmp)
        free = fs.f_bavail * fs.f_frsize
        if need > free:
            raise BundleRefused(
                f"{media.label}: not enough space in the content store {self.root} "
                f"(needs {_mib(need)}, {_mib(free)} free)",
                "free disk space and import again; nothing was copied")

    def _clean_tmp(self) -> None:
        """Remove what an interrupted import left; safe because we hold the store lock."""
        for entry in os.scandir(self.tmp):
            _unlink_quietly(Path(entry.path))
        fsync_dir(self.tmp)


@dataclass(frozen=True)
class _Run:
    """What every worker of one ingest shares."""

    media: MediaSource
    meter: ProgressMeter
    cancel: threading.Event
    writers: ThreadPoolExecutor


class StoreLock:
    """One writer at a time per store, so the temp clean-up never hits a live import and a
    reclaim never removes what an import is about to record. Re-entering a held lock is a
    no-op (the import passes its lock down to the copy); flock is released by the kernel
    when a process dies, even by SIGKILL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.depth = 0

    def __enter__(self) -> StoreLock:
        self.depth += 1
        if self.depth > 1:
            return self
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self.depth = 0
            raise _store_error(e, f"content store {self.path.parent}", _STORE_HINT) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.depth = 0
            raise StoreBusy(f"content store {self.path.parent} is in use by an import or a "
                            "reclaim") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            os.close(self.fd)


def _check_wanted(media: MediaSource, files: list[WantedFile]) -> list[WantedFile]:
    """Validate the list against the media listing before anything is written."""
    listed = {f.relpath: f.size for f in media.list_files()}
    by_digest: dict[str, WantedFile] = {}
    for w in files:
        if not _DIGEST.fullmatch(w.sha256):
            raise BundleRefused(f"{media.label}: {w.relpath!r} has a malformed SHA-256 "
                                f"{w.sha256[:80]!r}")
        if w.relpath not in listed:
            raise BundleRefused(f"{media.label}: {w.relpath!r} is missing from the media")
        if listed[w.relpath] != w.size:
            raise BundleRefused(f"{media.label}: {w.relpath!r} is {listed[w.relpath]} bytes, "
                                f"its signed size is {w.size}")
        seen = by_digest.setdefault(w.sha256, w)
        if seen.size != w.size:
            raise BundleRefused(f"{media.label}: {seen.relpath!r} and {w.relpath!r} claim "
                                "the same SHA-256 with different sizes")
    return list(by_digest.values())


def _first_error(failed: list[Future[None]], order: list[Future[None]]) -> BaseException:
    # Prefer a real reason over the _Cancelled of workers that were merely stopped.
    errors = [f.exception() for f in order if f in failed]
    real = [e for e in errors if not isinstance(e, _Cancelled)]
    return (real or errors)[0]  # type: ignore[return-value]


_STORE_HINT = "check the appliance home's disk and permissions; nothing was copied"


def _store_error(e: OSError, label: str,
                 hint: str = "check the media is still inserted and import again; it resumes"
                 ) -> BundleRefused:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BundleRefused(f"{label}: the content store's disk is full",
                             "free disk space and import again; nothing partial was kept")
    return BundleRefused(f"{label}: {e.strerror or e}", hint)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
