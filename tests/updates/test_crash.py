"""Crash safety: the installing process is killed with SIGKILL at random points between
approval and ACTIVE; after each, recovery finds the interrupted operation and completes or
undoes it, the active release is complete and agrees with the database, `current` points at
a complete release, and the audit trail verifies.

Each run forks a child that opens a copy of a prepared appliance home and installs with a
hook (the process edge) that kills the child at point k. The points are every place the
install code marks as one (`Hooks.point`): before and after each commit, after each file
linked into the release, around the switch, the restarts and the pruning.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.audit.verify import verify_trail
from appliance.context import Appliance
from appliance.services import auth, updates
from appliance.settings import UpdatePolicy, save_settings
from appliance.updates.install import Edges
from appliance.updates.lifecycle import State, find_bundle
from appliance.updates.recovery import consistency
from tests.conftest import ADMIN, PASSWORD, SteppingClock, cli_env
from tests.updates.kit import SHARDS, approve, h100, sign_req, trust_and_import

SEED = 20260115


@pytest.fixture
def runs(tmp_path):
    """Where the per-run homes go: a RAM file system when there is one (here rmdir on the
    disk costs ~2 ms each, which made clean-up the slowest part of a run). Process kills
    do not depend on fsync reaching the disk, so nothing the test checks changes."""
    base = Path("/dev/shm")
    if base.is_dir() and os.access(base, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="appliance-crash-", dir=base))
    else:
        d = tmp_path / "runs"
        d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


class KillAt:
    """Kill this process at the k-th point (k = 0: never), remembering the labels seen."""

    def __init__(self, k: int) -> None:
        self.k, self.n, self.labels = k, 0, []

    def point(self, label: str) -> None:
        self.n += 1
        self.labels.append(label)
        if self.n == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


def snapshot(app: Appliance, dest: Path) -> Path:
    """A copy of the appliance home as it is on disk now (WAL folded into the file)."""
    app.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(app.layout.root, dest, symlinks=True,
                    ignore=shutil.ignore_patterns("*-shm", "*-wal"))
    return dest


def in_child(home: Path, start, action) -> int:
    """Fork; the child opens `home` and runs `action(app, session)`; returns its status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is invisible to the parent
        code = 0
        try:
            app = Appliance.open(home, clock=SteppingClock(start), terminal="crash-child")
            action(app, auth.login(app, ADMIN, PASSWORD))
        except BaseException:   # noqa: BLE001 - report as an exit code, never return
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def recover_and_check(home: Path, start) -> dict:
    app = Appliance.open(home, clock=SteppingClock(start), terminal="next-start")
    try:
        st = updates.status(app, auth.login(app, ADMIN, PASSWORD))
        assert st["problems"] == [] and st["consistent"], st["problems"]
        assert st["open_journal"] is None
        report = verify_trail(app.conn, app.key.public)
        assert report.ok, [f.message for f in report.findings]
        target = os.readlink(app.layout.releases / "current") \
            if os.path.lexists(app.layout.releases / "current") else None
        assert target == (st["active"]["name"] + "/" + str(st["active"]["version"])
                          if st["active"] else None)
        assert consistency(app) == []
        return {"active": st["active"]["ref"] if st["active"] else None,
                "states": dict(app.conn.execute("SELECT name || '@' || version, state FROM "
                                                "bundles").fetchall()),
                "recovery": st["recovery"]["resolved"]}
    finally:
        app.close()


def _kill_runs(template: Path, tmp: Path, start, action, points: list[int], labels: list[str],
               expect) -> dict[str, int]:
    """Kill a child at each point, recover, check. Returns how many runs ended which way."""
    seen: dict[str, int] = {}
    for i, k in enumerate(points):
        home = tmp / f"k{k}-{i}"
        shutil.copytree(template, home, symlinks=True)
        t_child = start + timedelta(minutes=1)
        status = in_child(home, t_child, lambda app, s, k=k: action(app, s, KillAt(k)))
        assert killed(status), f"point {k} ({labels[k - 1]}): child ended with {status}"
        out = recover_and_check(home, start + timedelta(hours=1))
        expect(out, labels[k - 1])
        decision = (out["recovery"] or {}).get("decision", "none")
        seen[decision] = seen.get(decision, 0) + 1
        shutil.rmtree(home)
    return seen


def _count_points(template: Path, tmp: Path, start, action) -> list[str]:
    home = tmp / "count"
    shutil.copytree(template, home, symlinks=True)
    hooks = KillAt(0)
    app = Appliance.open(home, clock=SteppingClock(start), terminal="count")
    try:
        result = action(app, auth.login(app, ADMIN, PASSWORD), hooks)
        assert result.outcome == "activated"
    finally:
        app.close()
    shutil.rmtree(home)
    return hooks.labels


@pytest.fixture
def upgrade_template(app, admin_session, security, itop, media, clock, tmp_path):
    """v1 ACTIVE, v2 APPROVED; one release kept, so activating v2 also prunes v1."""
    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    approve(app, admin_session, ref1)
    assert updates.install(app, admin_session, ref1, Edges(source=h100())).outcome == \
        "activated"
    approve(app, admin_session, ref2)
    save_settings(app.layout.config, dataclasses.replace(
        app.settings, updates=UpdatePolicy(keep_releases=1)))
    return snapshot(app, tmp_path / "template"), ref2, clock.t


def _install(ref):
    def action(app, session, hooks):
        return updates.install(app, session, ref, Edges(source=h100(), hooks=hooks))
    return action


def test_sigkill_at_random_points_of_an_upgrade(upgrade_template, runs) -> None:
    template, ref2, t0 = upgrade_template
    action = _install(ref2)
    labels = _count_points(template, runs, t0, action)
    assert len(labels) >= 110, labels                  # SHARDS files give many link points
    assert sum(label.startswith("layout:") for label in labels) >= SHARDS
    healthy = labels.index("healthy:committed") + 1    # from here on recovery completes
    points = sorted(random.Random(SEED).sample(range(1, len(labels) + 1), 110))

    def expect(out, label):
        done = labels.index(label) + 1 >= healthy
        if done:
            assert out["states"] == {"demo-clinical@1": "APPROVED",
                                     "demo-clinical@2": "ACTIVE"}, label
        else:
            assert out["states"] == {"demo-clinical@1": "ACTIVE",
                                     "demo-clinical@2": "APPROVED"}, label

    started = time.monotonic()
    seen = _kill_runs(template, runs, t0, action, points, labels, expect)
    print(f"\nupgrade: {len(points)} kill points of {len(labels)}: {seen} "
          f"in {time.monotonic() - started:.1f} s")
    assert seen.get("undone", 0) > 50 and seen.get("completed", 0) >= 1


def test_sigkill_during_a_first_install_and_then_during_recovery(
        app, admin_session, security, itop, media, clock, tmp_path, runs) -> None:
    """Nothing active before; every other run also kills the recovery itself once."""
    [ref1] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref1)
    template = snapshot(app, tmp_path / "template")
    t0 = clock.t
    action = _install(ref1)
    labels = _count_points(template, runs, t0, action)
    rng = random.Random(SEED + 1)
    points = sorted(rng.sample(range(1, len(labels) + 1), 20))
    seen: dict[str, int] = {}
    recovery_killed = 0
    for i, k in enumerate(points):
        home = runs / f"first-{k}"
        shutil.copytree(template, home, symlinks=True)
        assert killed(in_child(home, t0 + timedelta(minutes=1),
                               lambda a, s, k=k: action(a, s, KillAt(k))))
        if i % 2 == 0:      # the recovery dies too, at one of its first points
            j = rng.randint(1, 3)
            recovery_killed += killed(in_child(
                home, t0 + timedelta(minutes=30),
                lambda a, s, j=j: updates.status(a, s, Edges(hooks=KillAt(j)))))
        out = recover_and_check(home, t0 + timedelta(hours=1))
        assert out["states"]["demo-clinical@1"] in ("ACTIVE", "APPROVED")
        if out["states"]["demo-clinical@1"] == "APPROVED":
            assert out["active"] is None        # undone: nothing is current
        seen[out["states"]["demo-clinical@1"]] = seen.get(out["states"]["demo-clinical@1"],
                                                          0) + 1
        shutil.rmtree(home)
    assert seen.get("APPROVED", 0) >= 5
    print(f"\nfirst install: {len(points)} kill points of {len(labels)}, {recovery_killed} "
          f"recoveries killed too: {seen}")
    assert recovery_killed >= 3


def test_sigkill_during_a_signed_rollback(app, admin_session, security, itop, media, clock,
                                          tmp_path, runs) -> None:
    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    for ref in (ref1, ref2):
        approve(app, admin_session, ref)
        updates.install(app, admin_session, ref, Edges(source=h100()))
    template = snapshot(app, tmp_path / "template")
    t0 = clock.t

    def action(a, s, hooks):
        return updates.rollback(a, s, ref1, sign_req(ADMIN, reason="back to v1"),
                                Edges(source=h100(), hooks=hooks))

    labels = _count_points(template, runs, t0, action)
    healthy = labels.index("healthy:committed") + 1
    points = sorted(random.Random(SEED + 2).sample(range(1, len(labels) + 1), 12))

    def expect(out, label):
        if labels.index(label) + 1 >= healthy:
            assert out["states"] == {ref1: "ACTIVE", ref2: "ROLLED_BACK"}, label
        else:
            # Undone: v2 still runs and v1's kept release is intact for another try.
            assert out["states"] == {ref1: "APPROVED", ref2: "ACTIVE"}, label

    seen = _kill_runs(template, runs, t0, action, points, labels, expect)
    print(f"\nrollback: {len(points)} kill points of {len(labels)}: {seen}")
    assert seen.get("undone", 0) >= 5


def test_cli_status_finds_and_undoes_an_interrupted_install(upgrade_template,
                                                            tmp_path) -> None:
    template, ref2, t0 = upgrade_template
    home = tmp_path / "cli"
    shutil.copytree(template, home, symlinks=True)
    labels = _count_points(template, tmp_path, t0, _install(ref2))
    k = labels.index("switch:after") + 1     # killed just after the switch
    assert killed(in_child(home, t0 + timedelta(minutes=1),
                           lambda a, s: _install(ref2)(a, s, KillAt(k))))
    assert os.readlink(home / "releases" / "current") == "demo-clinical/2"
    out = subprocess.run([sys.executable, "-m", "appliance", "update", "status", "--json",
                          "--user", ADMIN, "--password-stdin"], input=PASSWORD + "\n",
                         capture_output=True, text=True, env=cli_env(home), timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    st = json.loads(out.stdout)
    assert st["recovery"]["resolved"]["decision"] == "undone"
    assert st["recovery"]["resolved"]["step"] == "laid_out"   # the switch was not recorded
    assert st["consistent"] and st["current"] == "demo-clinical/1"
    with Appliance.open(home) as app:
        assert find_bundle(app.conn, ref2).state == State.APPROVED
        assert verify_trail(app.conn, app.key.public).ok
