"""What the provisioning screen shows of a run, folded from its task events; no widgets here.

`LiveRun.fold` takes the batches the runner hands over (live) or a stored run's replayed
events (history) and says which task rows to add or change, so the screen only draws. The
row count is bounded: a cluster run of site.yml can report thousands of results, and a
DataTable slows with every row; past the bound only failures get rows, and the counts,
progress and the failure text stay complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from appliance.provision.events import RESULT_KINDS, TaskEvent
from appliance.provision.records import RunRecord

MAX_ROWS = 1000
PROBLEMS = ("failed", "unreachable")


@dataclass
class TaskRow:
    key: str
    host: str
    result: str      # running, ok, changed, failed, skipped, unreachable, play
    task: str


@dataclass
class HostLine:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_KINDS, 0))
    current: str = ""


def task_label(e: TaskEvent) -> str:
    where = f"{e.role} : {e.task}" if e.role else e.task
    return f"handler: {where}" if e.handler else where


class LiveRun:
    """Rows, per-host counts, progress and failures of one run."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.rows: dict[str, TaskRow] = {}
        self.hosts: dict[str, HostLine] = {}
        self.failures: list[TaskEvent] = []
        self.done = 0
        self.total = 0
        self.play = ""
        self.dropped = 0                       # results past the row bound, counted only
        self._open: dict[tuple[str, str], str] = {}   # (host, task) -> row still running

    def fold(self, events: Iterable[TaskEvent]) -> tuple[list[TaskRow], list[TaskRow]]:
        """Take a batch; return (rows added, rows changed) for the table to draw."""
        added: list[TaskRow] = []
        changed: list[TaskRow] = []
        for e in events:
            self.done, self.total = max(self.done, e.done), max(self.total, e.total)
            if e.kind == "play":
                self.play = e.task
                self._add(TaskRow(f"play-{e.seq}", "", "play", e.task), added, always=True)
                continue
            line = self.hosts.setdefault(e.host, HostLine())
            label = task_label(e)
            if e.kind == "started":
                line.current = label
                row = self._add(TaskRow(f"{e.host}-{e.seq}", e.host, "running", label), added)
                if row is not None:
                    self._open[(e.host, label)] = row.key
                continue
            line.counts[e.kind] = line.counts.get(e.kind, 0) + 1
            if line.current == label:
                line.current = ""
            if e.kind in PROBLEMS:
                self.failures.append(e)
            key = self._open.pop((e.host, label), None)
            if key is not None:
                row = self.rows[key]
                row.result = e.kind
                changed.append(row)
            elif self._add(TaskRow(f"{e.host}-{e.seq}", e.host, e.kind, label), added,
                           always=e.kind in PROBLEMS) is None:
                self.dropped += 1
        return added, changed

    def close(self, status: str) -> list[TaskRow]:
        """The run ended (cancelled, timed out, died): tasks still shown running never got
        a result; say how they ended. Returns the rows changed."""
        changed = [self.rows[key] for key in self._open.values() if key in self.rows]
        for row in changed:
            row.result = status
        self._open.clear()
        for line in self.hosts.values():
            line.current = ""
        return changed

    def _add(self, row: TaskRow, added: list[TaskRow], always: bool = False
             ) -> TaskRow | None:
        if len(self.rows) >= self.max_rows and not always:
            return None
        self.rows[row.key] = row
        added.append(row)
        return row


def host_lines(live: LiveRun) -> str:
    """One line per host: its counts and the task it is running now."""
    out = []
    for host, line in live.hosts.items():
        c = line.counts
        text = (f"{host}: ok {c['ok']}, changed {c['changed']}, failed {c['failed']}, "
                f"skipped {c['skipped']}")
        if c["unreachable"]:
            text += f", unreachable {c['unreachable']}"
        if line.current:
            text += f"; now {line.current}"
        out.append(text)
    if live.dropped:
        out.append(f"({live.dropped} results not listed; every one is in the run's "
                   "artifacts)")
    return "\n".join(out)


STOPPED = ("cancelled", "timeout", "interrupted")


def failure_text(failures: list[TaskEvent], fallback: str | None = None,
                 status: str = "failed") -> str:
    """Each failed task with its host and its message in full (tracebacks included); with
    none, the run's own reason (a cancel, a timeout, a playbook that did not parse)."""
    if not failures:
        if not fallback:
            return ""
        return f"{'Stopped' if status in STOPPED else 'FAILED'}: {fallback}"
    return "\n\n".join(f"FAILED on {e.host}: {task_label(e)}\n{e.message}" for e in failures)


def when(iso: str | None) -> str:
    """'2026-01-15T09:00:01.234Z' -> '2026-01-15 09:00:01' (UTC, as recorded)."""
    return (iso or "")[:19].replace("T", " ")


def run_title(rec: RunRecord) -> str:
    took = f" in {rec.duration_s:.1f} s" if rec.duration_s is not None else ""
    return (f"{rec.mode} {rec.playbook} on {rec.inventory} ({', '.join(rec.targets)}): "
            f"{rec.status}{took}")


def run_summary(rec: RunRecord) -> str:
    """What the history shows of one run: who, when, result per host, the failure line."""
    lines = [run_title(rec),
             f"run {rec.id}, started {when(rec.started_at)} UTC by {rec.started_by}",
             f"inventory digest {rec.inventory_digest[:16]}…"]
    if rec.extra_vars:
        lines.append("variables: " + ", ".join(f"{k}={v}" for k, v in
                                                sorted(rec.extra_vars.items())))
    for host, c in sorted(rec.hosts.items()):
        lines.append(f"  {host}: ok {c.get('ok', 0)}, changed {c.get('changed', 0)}, "
                     f"failed {c.get('failed', 0)}, skipped {c.get('skipped', 0)}, "
                     f"unreachable {c.get('unreachable', 0)}")
    if rec.failure:
        lines.append(f"failure: {rec.failure}")
    return "\n".join(lines)


def history_row(rec: RunRecord) -> tuple[str, ...]:
    return (when(rec.started_at), rec.started_by, rec.mode, rec.playbook, rec.inventory,
            rec.status)


def artifact_order(name: str) -> int:
    """Sort key: the files people read first (stdout, status, rc, command, inputs) before
    job_events, one file per event (a stable sort keeps their counter order)."""
    return 1 if "/job_events/" in name else 0
