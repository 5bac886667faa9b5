"""Find and kill every process a provisioning run started, read from /proc.

ansible-runner's cancel kills only the playbook's process group; a module's children
(a `command` that forks, an async task that daemonises) live on. Every process of a run
inherits a marker variable in its environment, and we also walk /proc parent links from
the marked processes, so a child that cleared its environment is still found.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARKER = "APPLIANCE_PROVISION_RUN"
PROC = Path("/proc")


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc/PID/stat; None once the process is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks: with the pid it names one process for good."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def alive(pid: int, ticks: int | None) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z" and (ticks is None or start_ticks(pid) == ticks)


def _marked(run_id: str) -> set[int]:
    needle = f"{MARKER}={run_id}".encode()
    found = set()
    for pid in _pids():
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(pid)
    return found


def run_processes(run_id: str) -> set[int]:
    """Live (non-zombie) processes of a run: marked ones and all their descendants."""
    roots = _marked(run_id)
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            states[pid] = st[0]
            children.setdefault(st[1], []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    found.discard(os.getpid())
    return {p for p in found if states.get(p, "Z") != "Z"}


def kill_run(run_id: str, timeout_s: float = 10.0) -> int:
    """Stop every process of the run (so none can fork more), then kill them all.

    Returns how many processes were killed. Zombies left for init to reap are not counted:
    they no longer run.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = run_processes(run_id)
        if not pids:
            break
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        # Anything forked between the scan and the stops is caught by a second scan.
        pids |= run_processes(run_id)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        killed |= pids
        _wait_gone(pids, deadline)
    return len(killed)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pids: set[int], deadline: float) -> None:
    while time.monotonic() < deadline:
        if not any((st := _stat(p)) is not None and st[0] != "Z" for p in pids):
            return
        time.sleep(0.02)
