"""Run a command as a child subreaper, so that nothing a run starts can leave the run.

A task's process that double-forks and clears its environment (`setsid nohup env -i ...
&`) carries no marker and would be re-parented to init, out of `proctree`'s reach. Under
this process (Linux `PR_SET_CHILD_SUBREAPER`) it is re-parented here instead: a marked
process, so `proctree` finds it as a descendant. When the command ends, whatever it left
running is stopped and killed here, before this process exits and such orphans would go
to init; how many is written to COUNT_FILE. Works without root or systemd. Standard
library only: it runs as `python -I reaper.py COUNT_FILE -- COMMAND...`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
KILL_TIMEOUT_S = 10.0


def _descendants(root: int) -> set[int]:
    """Live (non-zombie) descendants of `root`, from /proc parent links."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        states[int(entry.name)] = fields[0].decode()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return {p for p in found if states.get(p, "Z") != "Z"}


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants() -> int:
    """Stop every descendant (so none forks more), kill them all, reap; how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = _descendants(os.getpid())
        if not pids:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            pids |= _descendants(os.getpid())  # forked between the scan and the stops
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        killed |= pids
        time.sleep(0.02)
        _reap()
    _reap()
    return len(killed)


def _write_count(path: str, count: int) -> None:
    try:
        Path(path).write_text(f"{count}\n", encoding="utf-8")
    except OSError:
        pass  # the count is a record, not a condition of the cleanup


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("error: usage: reaper.py COUNT_FILE -- COMMAND... (run by the appliance)",
              file=sys.stderr)
        return 2
    count_file, command = argv[0], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        # Fail closed: without it, a run's orphans could outlive a cancel.
        why = os.strerror(ctypes.get_errno())
        print(f"error: cannot become a child subreaper: {why} (provisioning needs Linux "
              "3.4 or later)", file=sys.stderr)
        return 125

    def stop(signum: int, _frame: object) -> None:
        _write_count(count_file, kill_descendants())
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    rc = 1
    while True:
        try:
            done, status = os.wait()  # adopted orphans that exit are reaped here too
        except ChildProcessError:
            break
        if done == pid:
            rc = os.waitstatus_to_exitcode(status)
            break
    _write_count(count_file, kill_descendants())
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
