"""Found at the next start: an interrupted install, leftover files, and whether the active
release on disk agrees with the database.

`recover` runs under the install lock, so it never touches an install that is still alive
(the lock is held) and always takes over one that died (the kernel released its lock).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.audit.events import Event
from appliance.context import Appliance
from appliance.hardware.profiles import EngineProfile
from appliance.updates import journal
from appliance.updates.install import (
    Edges,
    Plan,
    Runner,
    activate,
    keep_set,
    plan_release,
    prune,
    release_dirs,
    release_problems,
    switch_back,
    system_runner,
)
from appliance.updates.journal import JournalEntry
from appliance.updates.lifecycle import (
    BundleRecord,
    State,
    active_bundle,
    bundle_event,
    get_bundle,
    transition,
)
from appliance.updates.releases import CURRENT, InstallLock


def planned(app: Appliance, bundle: BundleRecord, profile: dict[str, Any] | str) -> Plan:
    """The release the records say `bundle` has with `profile` (a release row's JSON or a
    journal entry's dict): its signed files and generated serving.json."""
    d = json.loads(profile) if isinstance(profile, str) else profile
    return plan_release(app, bundle, EngineProfile.from_dict(d), {})


@dataclass(frozen=True)
class Recovery:
    journal: int
    op: str
    bundle: str
    step: str
    decision: str           # completed | undone | rolled_back

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecoveryReport:
    busy: bool = False                       # another process holds the install lock
    resolved: Recovery | None = None
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolved"] = self.resolved.to_dict() if self.resolved else None
        return d


def recover(app: Appliance, edges: Edges | None = None, found_by: str = "") -> RecoveryReport:
    """Finish or undo an interrupted install, prune old releases and sweep leftovers."""
    lock = InstallLock(app.layout.releases)
    if not lock.acquire():
        return RecoveryReport(busy=True)
    try:
        return recover_locked(system_runner(app, edges or Edges()), found_by)
    finally:
        lock.release()


def recover_locked(runner: Runner, found_by: str = "") -> RecoveryReport:
    app = runner.app
    report = RecoveryReport()
    entry = journal.open_entry(app.conn)
    if entry is not None:
        report.resolved = resolve(runner, entry, found_by)
    report.removed = prune(runner)
    swept = runner.dirs.sweep(keep_set(app))
    if swept:
        with app.transaction():
            app.trail.append(_cleanup_event(runner, swept, found_by))
        report.removed += swept
    return report


def _cleanup_event(runner: Runner, swept: list[str], found_by: str) -> Event:
    return Event(action="update.cleanup", actor=runner.actor, target_type="releases",
                 target_id="releases", reason="left over from an interrupted operation",
                 details={"removed": swept, "found_by": found_by}, terminal=runner.terminal)


def consistency(app: Appliance, deep: bool = True) -> list[str]:
    """Everything that would make the running release disagree with the records. Empty
    means: at most one ACTIVE bundle, `current` points at its complete release directory,
    nothing is half-installed and no leftovers lie under releases/."""
    problems: list[str] = []
    dirs = release_dirs(app)
    conn = app.conn
    entry = journal.open_entry(conn)
    if entry is not None:
        problems.append(f"install journal {entry.id} ({entry.op}) is open at step {entry.step}")
    installing = conn.execute("SELECT COUNT(*) FROM bundles WHERE state = 'INSTALLING'"
                              ).fetchone()[0]
    if installing and entry is None:
        problems.append(f"{installing} bundle(s) INSTALLING with no open journal")
    n_active = conn.execute("SELECT COUNT(*) FROM bundles WHERE state = 'ACTIVE'").fetchone()[0]
    if n_active > 1:
        problems.append(f"{n_active} bundles are ACTIVE")
    active = active_bundle(conn)
    broken = dirs.current_problem()
    if broken:
        problems.append(broken)
    target = None if broken else dirs.read_current()
    row = conn.execute("SELECT bundle_id, path, profile FROM releases WHERE status = "
                       "'current'").fetchone()
    if active is None:
        if target is not None:
            problems.append(f"no bundle is ACTIVE but current points to {target}")
        if row is not None:
            problems.append("no bundle is ACTIVE but a release is marked current")
    else:
        if row is None or row[0] != active.id:
            problems.append(f"the current release row does not belong to {active.ref}")
        elif broken:
            pass
        elif target is None:
            problems.append(f"current is missing, the records say {row[1]}")
        elif target != row[1]:
            problems.append(f"current points to {target}, the records say {row[1]}")
        else:
            bad = release_problems(dirs, row[1], planned(app, active, row[2])) if deep else \
                ([] if dirs.path_of(row[1]).is_dir() else [f"{row[1]} is missing"])
            problems += [f"active release {row[1]}: {p}" for p in bad]
    for bundle_id, path, profile in conn.execute(
            "SELECT bundle_id, path, profile FROM releases WHERE status = 'kept'").fetchall():
        bundle = get_bundle(conn, bundle_id)
        bad = release_problems(dirs, path, planned(app, bundle, profile)) if deep else \
            ([] if dirs.path_of(path).is_dir() else ["missing"])
        problems += [f"kept release {path}: {p}" for p in bad]
    if entry is None and dirs.root.is_dir():
        keep = keep_set(app)
        for d in dirs.root.iterdir():
            if d.name.startswith(".current.tmp-"):
                problems.append(f"leftover {d.name}")
            elif d.is_dir() and not d.is_symlink() and d.name != CURRENT:
                problems += [f"leftover {d.name}/{s.name}" for s in d.iterdir()
                             if f"{d.name}/{s.name}" not in keep]
    return problems


def describe(app: Appliance) -> dict[str, Any]:
    """The update status: active bundle, `current`, releases kept, recent journal entries."""
    dirs = release_dirs(app)
    active = active_bundle(app.conn)
    rows = app.conn.execute("SELECT r.id, b.name, b.version, r.path, r.status, r.created_at, "
                            "r.activated_at, r.removed_at FROM releases r JOIN bundles b ON "
                            "b.id = r.bundle_id ORDER BY r.id DESC LIMIT 20").fetchall()
    keys = ("id", "name", "version", "path", "status", "created_at", "activated_at",
            "removed_at")
    entry = journal.open_entry(app.conn)
    current = None if dirs.current_problem() else dirs.read_current()
    return {"active": active.summary() if active else None, "current": current,
            "keep_releases": app.settings.updates.keep_releases,
            "releases": [dict(zip(keys, r, strict=True)) for r in rows],
            "open_journal": entry.to_dict() if entry else None,
            "recent_journal": [e.to_dict() for e in journal.recent(app.conn, 5)]}


def resolve(runner: Runner, entry: JournalEntry, found_by: str = "") -> Recovery:
    """Finish or undo the interrupted operation `entry` (the install lock is held)."""
    app, dirs = runner.app, runner.dirs
    bundle = get_bundle(app.conn, entry.bundle_id)
    if entry.step == journal.HEALTHY and dirs.read_current() == entry.release_path and \
            not release_problems(dirs, entry.release_path,
                                 planned(app, bundle, entry.profile)):
        decision = "completed"
    elif entry.step == journal.FAILED:
        decision = "rolled_back"
    else:
        decision = "undone"
    with app.transaction():
        app.trail.append(bundle_event(
            bundle, "update.recovery", runner.actor, runner.terminal,
            reason=f"found an interrupted {entry.op} at step {entry.step}",
            details={"journal": entry.id, "op": entry.op, "step": entry.step,
                     "decision": decision, "current": dirs.read_current(),
                     "previous": entry.previous_target, "found_by": found_by}))
    runner.point("recovery:recorded")
    if decision == "completed":
        activate(runner, entry)
    elif decision == "rolled_back":
        failures = entry.details.get("failures") or "health check failed before the crash"
        switch_back(runner, entry, failures)
    else:
        undo_interrupted(runner, entry)
    return Recovery(entry.id, entry.op, bundle.ref, entry.step, decision)


def undo_interrupted(runner: Runner, entry: JournalEntry) -> None:
    """An install or rollback that died before its health checks passed: put the previous
    release back behind `current`, restart, and return the bundle to APPROVED."""
    app, dirs = runner.app, runner.dirs
    bundle = get_bundle(app.conn, entry.bundle_id)
    now_target = dirs.read_current()
    switched = now_target != entry.previous_target or entry.step in (
        journal.SWITCHED, journal.RESTARTED, journal.HEALTHY, journal.FAILED)
    if now_target != entry.previous_target:
        dirs.switch(entry.previous_target)
        runner.point("undo:switched")
    if switched:
        runner.restart(entry, bundle, entry.previous_target,
                       f"restored after an interrupted {entry.op} of {bundle.ref}")
    with app.transaction():
        bundle = get_bundle(app.conn, entry.bundle_id)
        transition(app, bundle, State.APPROVED, runner.actor, runner.terminal,
                   reason=f"interrupted {entry.op} undone (it stopped after step "
                          f"{entry.step}); the previous release was restored",
                   outcome="failure",
                   details={"journal": entry.id, "release": entry.release_path,
                            "restored": entry.previous_target, "current_was": now_target})
        journal.close(app.conn, entry.id, "undone", app.clock.iso())
        runner.point("undo:before-commit")
    runner.point("undo:committed")
    if entry.op == "install":
        dirs.remove(entry.release_path)
