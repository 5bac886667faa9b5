"""Stored provisioning runs (`provision_runs`): one row per run, read back for history."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from appliance.errors import InvalidInput
from appliance.provision.patterns import selected


@dataclass(frozen=True)
class RunRecord:
    """A run as the history shows it. `extra_vars` are redacted; `hosts_list` is the
    inventory's hosts, `targets` those the limit selects of them; `hosts` maps each host the
    run reached to its ok/changed/failed/skipped/unreachable counts and changed counts per
    role."""

    id: str
    playbook: str
    inventory: str
    inventory_digest: str
    hosts_list: tuple[str, ...]
    check: bool
    extra_vars: dict[str, Any]
    limit: str | None
    status: str
    started_at: str
    started_by: str
    finished_at: str | None
    duration_s: float | None
    rc: int | None
    hosts: dict[str, dict[str, Any]]
    failure: str | None
    job_dir: str
    owner_host: str
    owner_pid: int
    owner_start: int | None

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def mode(self) -> str:
        return "check" if self.check else "run"

    @property
    def targets(self) -> tuple[str, ...]:
        """The hosts the run was for: a host outside its limit is no part of it."""
        return selected(self.limit, self.hosts_list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hosts_list"] = list(self.hosts_list)
        data["targets"] = list(self.targets)
        return data


_COLUMNS = ("id", "playbook", "inventory", "inventory_digest", "hosts_list", "check_mode",
            "extra_vars", "limit_hosts", "status", "started_at", "started_by", "finished_at",
            "duration_s", "rc", "host_counts", "failure", "job_dir", "owner_host", "owner_pid",
            "owner_start")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM provision_runs"


def _record(row: tuple[Any, ...]) -> RunRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    return RunRecord(
        id=d["id"], playbook=d["playbook"], inventory=d["inventory"],
        inventory_digest=d["inventory_digest"], hosts_list=tuple(json.loads(d["hosts_list"])),
        check=bool(d["check_mode"]), extra_vars=json.loads(d["extra_vars"]),
        limit=d["limit_hosts"], status=d["status"], started_at=d["started_at"],
        started_by=d["started_by"], finished_at=d["finished_at"], duration_s=d["duration_s"],
        rc=d["rc"], hosts=json.loads(d["host_counts"]), failure=d["failure"],
        job_dir=d["job_dir"], owner_host=d["owner_host"], owner_pid=d["owner_pid"],
        owner_start=d["owner_start"])


def insert(conn: sqlite3.Connection, rec: RunRecord) -> None:
    conn.execute(
        f"INSERT INTO provision_runs ({', '.join(_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(_COLUMNS))})",
        (rec.id, rec.playbook, rec.inventory, rec.inventory_digest,
         json.dumps(list(rec.hosts_list)), int(rec.check),
         json.dumps(rec.extra_vars, sort_keys=True), rec.limit, rec.status, rec.started_at,
         rec.started_by, rec.finished_at, rec.duration_s, rec.rc,
         json.dumps(rec.hosts, sort_keys=True), rec.failure, rec.job_dir, rec.owner_host,
         rec.owner_pid, rec.owner_start))


def finish(conn: sqlite3.Connection, run_id: str, status: str, finished_at: str,
           duration_s: float | None, rc: int | None, hosts: dict[str, Any],
           failure: str | None) -> None:
    """Close a running row; a row already closed is left alone (first writer wins)."""
    conn.execute(
        "UPDATE provision_runs SET status = ?, finished_at = ?, duration_s = ?, rc = ?, "
        "host_counts = ?, failure = ? WHERE id = ? AND status = 'running'",
        (status, finished_at, duration_s, rc, json.dumps(hosts, sort_keys=True), failure,
         run_id))


def get(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise InvalidInput(f"no provisioning run {run_id!r}",
                           "list runs with `appliance provision runs`")
    return _record(row)


def page(conn: sqlite3.Connection, limit: int = 50, before: str | None = None
         ) -> list[RunRecord]:
    """Newest first; pass the last id seen as `before` for the next page."""
    if before:
        rows = conn.execute(
            f"{_SELECT} WHERE (started_at, id) < (SELECT started_at, id FROM provision_runs "
            "WHERE id = ?) ORDER BY started_at DESC, id DESC LIMIT ?", (before, limit))
    else:
        rows = conn.execute(f"{_SELECT} ORDER BY started_at DESC, id DESC LIMIT ?", (limit,))
    return [_record(r) for r in rows.fetchall()]


def running(conn: sqlite3.Connection) -> list[RunRecord]:
    return [_record(r) for r in
            conn.execute(f"{_SELECT} WHERE status = 'running' ORDER BY started_at").fetchall()]
