"""Import progress: byte counts from worker threads, reported on the caller's thread.

Workers only add to counters; the thread that called `ingest` turns them into at most
about ten `ImportProgress` values a second, so a UI callback never runs on a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

RATE_WINDOW_S = 3.0  # long enough to smooth out fsync pauses, short enough to follow a slow stick
MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ImportProgress:
    done_bytes: int  # copied and verified, plus content already in the store
    total_bytes: int
    rate_bps: float  # bytes copied per second over the last few seconds
    eta_s: float | None  # None until a rate is known
    current: str  # a file being copied now, "" when none


class ProgressMeter:
    def __init__(self, total: int, already: int,
                 callback: Callable[[ImportProgress], None] | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.already = already
        self.callback = callback
        self.clock = clock
        self._copied = 0
        self._active: list[str] = []
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque()
        self._last_report = float("-inf")

    def started(self, relpath: str) -> None:
        with self._lock:
            self._active.append(relpath)

    def finished(self, relpath: str) -> None:
        with self._lock:
            if relpath in self._active:
                self._active.remove(relpath)

    def add(self, n: int) -> None:
        with self._lock:
            self._copied += n

    def snapshot(self) -> ImportProgress:
        now = self.clock()
        with self._lock:
            copied = self._copied
            current = self._active[-1] if self._active else ""
        samples = self._samples
        samples.append((now, copied))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        t0, c0 = samples[0]
        rate = (copied - c0) / (now - t0) if now > t0 else 0.0
        done = self.already + copied
        left = self.total - done
        eta = 0.0 if left <= 0 else (left / rate if rate > 0 else None)
        return ImportProgress(done, self.total, rate, eta, current)

    def report(self, force: bool = False) -> None:
        if self.callback is None:
            return
        now = self.clock()
        if not force and now - self._last_report < MIN_INTERVAL_S:
            return
        self._last_report = now
        self.callback(self.snapshot())
