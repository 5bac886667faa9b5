"""Turn ansible-runner's raw events into per-host task events, counts and progress.

The runner calls `EventTracker.handle` for every event from its own thread, while the
playbook runs; it must stay cheap. Events reach the caller's callback in batches, at most
every `throttle_s` (the runner's poll loop flushes the rest), so a console redraws a few
times a second however chatty the playbook is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.provision.redaction import scrub_text

RESULT_KINDS = ("ok", "changed", "failed", "skipped", "unreachable")
KINDS = ("play", "started", *RESULT_KINDS)
_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
ONE_LINE_MAX = 400


@dataclass(frozen=True)
class TaskEvent:
    """One thing that happened on one host: a task started, or its result.

    `message` holds a failure's full text (the console shows it whole); `done` and
    `total` are the run's progress when the event arrived: host-task results so far, of
    the host-tasks known (the playbook's tasks times its hosts, growing if more appear).
    """

    seq: int
    kind: str
    host: str
    task: str
    role: str
    action: str
    message: str
    done: int
    total: int
    handler: bool = False

    def line(self) -> str:
        """`host: task: message`, the one line a failure is reported as."""
        where = f"{self.role} : {self.task}" if self.role else self.task
        return one_line(f"{self.host}: {where}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HostCounts:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    changed_by_role: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    hosts: dict[str, HostCounts]
    current: dict[str, str]


def one_line(text: str, limit: int = ONE_LINE_MAX) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def failure_message(res: dict[str, Any]) -> str:
    """The most useful text of a failed result: msg, else stderr, else the exception."""
    if not isinstance(res, dict):
        return str(res)
    for item in res.get("results") or ():
        if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
            return failure_message(item)
    for key in ("msg", "stderr", "module_stderr", "exception", "module_stdout"):
        value = res.get(key)
        if value:
            return str(value).strip()
    return "failed (no message)"


class EventTracker:
    """Per-host state of one run, fed by the runner thread."""

    def __init__(self, hosts: Sequence[str], tasks_per_host: int,
                 on_events: Callable[[list[TaskEvent]], None] | None = None,
                 throttle_s: float = 0.1, hidden: set[str] | frozenset[str] = frozenset()
                 ) -> None:
        # The run's secret values (become password, host secrets): a failure's message
        # may quote one, and a task's name too (templated); the events, the failure line
        # that reaches the record and the audit trail, and the console never show them.
        self._hidden = set(hidden)
        self._lock = threading.Lock()
        self._expected = {h: tasks_per_host for h in hosts}
        self._done: dict[str, int] = {h: 0 for h in hosts}
        self._stopped: set[str] = set()
        self._handler_tasks: set[str] = set()
        self.counts: dict[str, HostCounts] = {h: HostCounts() for h in hosts}
        self.current: dict[str, str] = {}
        self.failures: list[TaskEvent] = []
        self.stats: dict[str, Any] | None = None
        self._on_events = on_events
        self._throttle_s = throttle_s
        self._pending: list[TaskEvent] = []
        self._last_flush = float("-inf")  # the first event goes out at once

    # -- called by ansible-runner, in its thread -------------------------------------
    def handle(self, raw: dict[str, Any]) -> bool:
        """Record one runner event. Always True: a falsy return makes the runner drop it."""
        try:
            self._handle(raw)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # an odd event must never stop the run or lose the runner's own record
        return True

    def _handle(self, raw: dict[str, Any]) -> None:
        name = raw.get("event", "")
        data = raw.get("event_data") or {}
        if name == "playbook_on_stats":
            with self._lock:
                self.stats = {k: data.get(k) or {} for k in
                              ("ok", "changed", "failures", "skipped", "dark", "ignored")}
            return
        if name == "playbook_on_task_start":
            if data.get("is_conditional"):
                with self._lock:
                    self._handler_tasks.add(data.get("task_uuid") or data.get("uuid", ""))
            return
        if name == "playbook_on_play_start":
            self._emit(raw, "play", "", scrub_text(data.get("name") or data.get("play", ""),
                                                   self._hidden), "", "", "")
            return
        host = data.get("host")
        if not host:
            return
        task = scrub_text(data.get("task", "") or data.get("name", ""), self._hidden)
        role = data.get("role", "") or ""
        action = data.get("task_action", "") or ""
        handler = data.get("task_uuid", "") in self._handler_tasks
        if name == "runner_on_start":
            with self._lock:
                self.current[host] = task
            self._emit(raw, "started", host, task, role, action, "", handler)
            return
        kind = _RESULT_EVENTS.get(name)
        if kind is None:
            return
        res = data.get("res") or {}
        message = ""
        with self._lock:
            counts = self.counts.setdefault(host, HostCounts())
            self._done[host] = self._done.get(host, 0) + 1
            if kind == "ok" and isinstance(res, dict) and res.get("changed"):
                kind = "changed"
                label = role or "(play)"
                counts.changed_by_role[label] = counts.changed_by_role.get(label, 0) + 1
            if kind == "failed" and data.get("ignore_errors"):
                kind = "ok"
            if kind in ("failed", "unreachable"):
                message = failure_message(res)
                self._stopped.add(host)
            elif kind == "skipped" and isinstance(res, dict):
                message = str(res.get("skip_reason", "") or "")
            setattr(counts, kind, getattr(counts, kind) + 1)
            self.current.pop(host, None)
        event = self._emit(raw, kind, host, task, role, action, message, handler)
        if kind in ("failed", "unreachable"):
            with self._lock:
                self.failures.append(event)

    def _emit(self, raw: dict[str, Any], kind: str, host: str, task: str, role: str,
              action: str, message: str, handler: bool = False) -> TaskEvent:
        done, total = self._progress()
        event = TaskEvent(int(raw.get("counter", 0)), kind, host, task, role, action,
                          scrub_text(message, self._hidden), done, total, handler)
        with self._lock:
            self._pending.append(event)
        if time.monotonic() - self._last_flush >= self._throttle_s:
            self.flush()
        return event

    def _progress(self) -> tuple[int, int]:
        with self._lock:
            done = sum(self._done.values())
            total = 0
            for host, expected in self._expected.items():
                seen = self._done.get(host, 0)
                # A failed host runs no more tasks; a host past the plan (handlers,
                # dynamic includes) has at least one more coming while it is running.
                total += seen if host in self._stopped else max(expected, seen)
            for host, seen in self._done.items():
                if host not in self._expected:
                    total += seen
            return done, max(total, done)

    # -- called by the runner's poll loop and at the end -----------------------------
    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if batch and self._on_events is not None:
            self._on_events(batch)

    def progress(self) -> Progress:
        done, total = self._progress()
        with self._lock:
            return Progress(done, total,
                            {h: HostCounts(**{**c.to_dict(),
                                              "changed_by_role": dict(c.changed_by_role)})
                             for h, c in self.counts.items()},
                            dict(self.current))

    def host_counts(self) -> dict[str, dict[str, Any]]:
        """Per-host counts of task results; `ok` excludes `changed` (each result counts once)."""
        with self._lock:
            return {h: c.to_dict() for h, c in self.counts.items()}
