"""Install and roll back releases, crash-safely: lay out, switch, restart, check, then commit.

Order of an install (each step's journal update and audit event commit together):
  started (APPROVED -> INSTALLING) -> laid_out -> switched -> restarted -> healthy | failed
  -> ACTIVE (previous release kept), or switched back -> ROLLED_BACK.
The database says ACTIVE only after the health checks passed, so until then the previous
release stays the active one on record; `recover` finishes an install that was healthy and
undoes any other, restoring the previous `current` link. Side effects enter through
`Edges` (restarter, health checks, GPU source, and `hooks.point` where tests kill the
process), so tests swap them at the edge and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from appliance.audit.events import SYSTEM_ACTOR, Actor
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.errors import ApplianceError, UpdateRefused
from appliance.hardware import GpuSource
from appliance.hardware.engine_config import verify_engine
from appliance.hardware.profiles import EngineProfile
from appliance.updates import journal
from appliance.updates.fit import (
    COMPONENTS_DIR,
    SERVING_FILE,
    external_bases,
    release_components,
    release_files,
    serving_config,
)
from appliance.updates.health import (
    CheckResult,
    HealthCheck,
    HealthContext,
    default_checks,
    run_checks,
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
from appliance.updates.releases import ReleaseDirs, disk_full, dumps
from appliance.updates.restart import RestartResult, ServiceRestarter, configured_restarter


class Hooks(Protocol):
    """Called at every point where a crash could happen (tests kill the process there)."""

    def point(self, label: str) -> None: ...


class NoHooks:
    def point(self, label: str) -> None:
        return None


@dataclass
class Edges:
    restarter: ServiceRestarter | None = None    # None: settings.provisioning decides
    checks: list[HealthCheck] = field(default_factory=default_checks)
    source: GpuSource | None = None
    hooks: Hooks = field(default_factory=NoHooks)


@dataclass(frozen=True)
class Plan:
    """What is about to be installed: the bundle, the approved profile and every file."""

    bundle: BundleRecord
    profile: EngineProfile
    rel: str
    files: list[tuple[str, str, int]]
    serving: dict[str, Any]
    selection: dict[str, Any]


@dataclass(frozen=True)
class InstallResult:
    bundle: str
    digest: str
    op: str
    outcome: str                 # activated | rolled_back | undone | refused
    release: str
    previous: str | None
    reason: str | None = None
    health: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    placement: dict[str, Any] | None = None
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_dirs(app: Appliance) -> ReleaseDirs:
    return ReleaseDirs(app.layout.releases, ContentStore(app.layout.store))


def plan_release(app: Appliance, bundle: BundleRecord, profile: EngineProfile,
                 selection: dict[str, Any], rel: str | None = None) -> Plan:
    """Every file of `bundle`'s release and its serving config, from the records alone (so
    a restore can lay out again exactly what the install laid out)."""
    components = release_components(bundle, external_bases(app.conn, bundle))
    return Plan(bundle, profile, rel or f"{bundle.name}/{bundle.version}",
                release_files(components), serving_config(bundle, profile, components),
                selection)


@dataclass
class Runner:
    app: Appliance
    actor: Actor
    terminal: str
    edges: Edges
    restarts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dirs(self) -> ReleaseDirs:
        return release_dirs(self.app)

    def point(self, label: str) -> None:
        self.edges.hooks.point(label)

    def step(self, entry_id: int, step: str, bundle: BundleRecord, action: str, *,
             outcome: str = "success", reason: str | None = None,
             details: dict[str, Any] | None = None) -> None:
        """Advance the journal and record the step's event in one transaction."""
        app = self.app
        with app.transaction():
            journal.set_step(app.conn, entry_id, step, app.clock.iso(), details)
            app.trail.append(bundle_event(bundle, action, self.actor, self.terminal,
                                          outcome=outcome, reason=reason,
                                          details={"journal": entry_id, "step": step,
                                                   **(details or {})}))
            self.point(f"{step}:before-commit")
        self.point(f"{step}:committed")

    def restart(self, entry: JournalEntry, bundle: BundleRecord, target: str | None,
                why: str) -> RestartResult:
        path = self.dirs.path_of(target) if target else None
        try:
            restarter = self.edges.restarter or configured_restarter(self.app, self.actor,
                                                                     self.terminal)
            result = restarter.restart(path, why)
        except Exception as exc:  # noqa: BLE001 - a crashing restarter is a failed restart
            result = RestartResult(False, False, (), f"restart failed: {exc}")
        self.restarts.append(result.to_dict())
        with self.app.transaction():
            self.app.trail.append(bundle_event(
                bundle, "update.services_restarted", self.actor, self.terminal,
                outcome="success" if result.ok else "failure",
                reason=None if result.ok else result.detail,
                details={"journal": entry.id, "release": target, "why": why,
                         **result.to_dict()}))
        self.point("restart:recorded")
        return result


def begin(runner: Runner, plan: Plan) -> JournalEntry:
    """APPROVED -> INSTALLING with an open journal entry (unsigned: installs need no
    signature; the signed rollback opens its journal inside its signing transaction)."""
    app = runner.app
    previous = active_bundle(app.conn)
    prev_target = runner.dirs.read_current()
    with app.transaction():
        entry_id = open_journal(app, "install", plan, previous, prev_target)
        transition(app, plan.bundle, State.INSTALLING, runner.actor, runner.terminal,
                   reason=f"approved: installing as release {plan.rel} with profile "
                          f"{plan.profile.id}",
                   details={"journal": entry_id, "release": plan.rel,
                            "previous_release": prev_target,
                            "previous_bundle": previous.ref if previous else None,
                            "profile": plan.profile.id, "selection": plan.selection})
        runner.point("started:before-commit")
    runner.point("started:committed")
    return journal.get(app.conn, entry_id)


def open_journal(app: Appliance, op: str, plan: Plan, previous: BundleRecord | None,
                 prev_target: str | None) -> int:
    return journal.create(app.conn, op, plan.bundle.id, previous.id if previous else None,
                          plan.rel, prev_target, plan.profile.to_dict(), app.clock.iso())


def carry_out(runner: Runner, entry: JournalEntry, plan: Plan) -> InstallResult:
    """From an open journal entry at `started` to ACTIVE, or back."""
    dirs, bundle = runner.dirs, get_bundle(runner.app.conn, plan.bundle.id)
    placement = None
    try:
        if entry.op == "install":
            placement = dirs.layout(plan.rel, entry.id, plan.files, generated(plan),
                                    runner.point)
            _check_engine(dirs, plan)
            detail = {"placement": placement.to_dict(), "files": len(plan.files)}
        else:
            problems = release_problems(dirs, plan.rel, plan)
            if problems:
                raise UpdateRefused(f"kept release {plan.rel} is damaged: {problems[0]}",
                                    "it cannot be rolled back to; nothing was switched")
            detail = {"verified_kept_release": True, "files": len(plan.files)}
    except ApplianceError as exc:
        if entry.op == "install":
            dirs.remove(plan.rel)
        _undo_refused(runner, entry, exc.message)
        raise
    runner.step(entry.id, journal.LAID_OUT, bundle, "update.laid_out",
                details={"release": plan.rel, **detail})
    runner.point("switch:before")
    try:
        dirs.switch(plan.rel)
    except OSError as exc:
        if dirs.read_current() != entry.previous_target:
            raise           # switched after all: recovery at the next start restores it
        if entry.op == "install":
            dirs.remove(plan.rel)
        message = (f"the disk holding {dirs.root} is full: could not switch to release "
                   f"{plan.rel}" if disk_full(exc) else
                   f"could not switch to release {plan.rel}: {exc.strerror or exc}")
        _undo_refused(runner, entry, message)
        raise UpdateRefused(message, "free disk space and try again; nothing was switched"
                            if disk_full(exc) else "nothing was switched; check the "
                            "appliance home") from None
    runner.point("switch:after")
    runner.step(entry.id, journal.SWITCHED, bundle, "update.switched",
                details={"from": entry.previous_target, "to": plan.rel})
    restart = runner.restart(entry, bundle, plan.rel, f"switched to {bundle.ref}")
    runner.step(entry.id, journal.RESTARTED, bundle, "update.restart_step",
                outcome="success" if restart.ok else "failure")
    results = health(runner, plan) if restart.ok else \
        [CheckResult("restart", False, restart.detail)]
    ok = all(r.ok for r in results)
    failures = "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)
    runner.step(entry.id, journal.HEALTHY if ok else journal.FAILED, bundle,
                "update.health_check", outcome="success" if ok else "failure",
                reason=None if ok else failures,
                details={"checks": [r.to_dict() for r in results],
                         **({} if ok else {"failures": failures})})
    entry = journal.get(runner.app.conn, entry.id)
    if ok:
        removed = activate(runner, entry)
        return _result(runner, entry, plan, "activated", None, results, placement, removed)
    switch_back(runner, entry, failures)
    return _result(runner, entry, plan, "rolled_back", failures, results, placement, [])


def generated(plan: Plan) -> dict[str, bytes]:
    """The files of a release generated from the records, as the layout writes them."""
    return {SERVING_FILE: dumps(plan.serving)}


def release_problems(dirs: ReleaseDirs, rel: str, plan: Plan) -> list[str]:
    """What differs in the laid-out release `rel` from `plan`: the signed files and those
    generated from the records (empty: whole)."""
    return dirs.verify(rel, plan.files, generated(plan))


def health(runner: Runner, plan: Plan) -> list[CheckResult]:
    ctx = HealthContext(runner.dirs, plan.rel, plan.files, plan.profile, plan.bundle.digest,
                        generated(plan), runner.edges.source)
    return run_checks(runner.edges.checks, ctx,
                      runner.app.settings.updates.health_check_timeout_s)


def _check_engine(dirs: ReleaseDirs, plan: Plan) -> None:
    """The laid-out engine's own config.json must still agree with the approved profile."""
    if plan.profile.kind == "trtllm_engine":
        component = plan.profile.extra.get("component", plan.profile.id)
        verify_engine(dirs.path_of(plan.rel) / COMPONENTS_DIR / component, plan.profile)


def _result(runner: Runner, entry: JournalEntry, plan: Plan, outcome: str, reason: str | None,
            results: list[CheckResult], placement: Any, removed: list[str]) -> InstallResult:
    return InstallResult(plan.bundle.ref, plan.bundle.digest, entry.op, outcome, plan.rel,
                         entry.previous_target, reason, [r.to_dict() for r in results],
                         runner.restarts, placement.to_dict() if placement else None, removed)


def _undo_refused(runner: Runner, entry: JournalEntry, why: str) -> None:
    """Refused before the switch (disk full, damaged kept release, engine mismatch)."""
    app = runner.app
    bundle = get_bundle(app.conn, entry.bundle_id)
    with app.transaction():
        transition(app, bundle, State.APPROVED, runner.actor, runner.terminal,
                   reason=f"install refused before the switch: {why}", outcome="failure",
                   details={"journal": entry.id, "release": entry.release_path})
        journal.close(app.conn, entry.id, "refused", app.clock.iso())


def activate(runner: Runner, entry: JournalEntry) -> list[str]:
    """Health checks passed: the database now says so, in one transaction. Returns the
    releases pruned afterwards."""
    app = runner.app
    with app.transaction():
        bundle = get_bundle(app.conn, entry.bundle_id)
        previous = active_bundle(app.conn)
        now = app.clock.iso()
        dropped = []
        if entry.op == "install":
            app.conn.execute("UPDATE releases SET status = 'kept' WHERE status = 'current'")
        else:
            # The release rolled back from is not a rollback target: remove it, recorded
            # as prune records each removal (its directory goes after the commit).
            dropped = app.conn.execute(
                "SELECT bundle_id, path FROM releases WHERE status = 'current'").fetchall()
            app.conn.execute("UPDATE releases SET status = 'removed', removed_at = ? WHERE "
                             "status = 'current'", (now,))
        cur = app.conn.execute("UPDATE releases SET status = 'current', activated_at = ? "
                               "WHERE bundle_id = ? AND path = ? AND status = 'kept'",
                               (now, bundle.id, entry.release_path))
        if cur.rowcount == 0:
            app.conn.execute(
                "INSERT INTO releases (bundle_id, path, status, profile, placement, created_at,"
                " activated_at) VALUES (?, ?, 'current', ?, ?, ?, ?)",
                (bundle.id, entry.release_path, dumps(entry.profile).decode(),
                 dumps(entry.details.get("placement", {})).decode(), now, now))
        transition(app, bundle, State.ACTIVE, runner.actor, runner.terminal,
                   reason=f"the {entry.op} of release {entry.release_path} passed its health "
                          "checks",
                   details={"journal": entry.id, "release": entry.release_path,
                            "profile": entry.profile.get("id"), "op": entry.op})
        if previous is not None and previous.id != bundle.id:
            if entry.op == "install":
                transition(app, previous, State.APPROVED, runner.actor, runner.terminal,
                           reason=f"superseded by {bundle.ref}; its release is kept for "
                                  "rollback", details={"journal": entry.id})
            else:
                transition(app, previous, State.ROLLED_BACK, runner.actor, runner.terminal,
                           reason=f"rolled back to {bundle.ref}",
                           details={"journal": entry.id})
        for dropped_bundle, path in dropped:
            app.trail.append(bundle_event(
                get_bundle(app.conn, dropped_bundle), "update.release_removed", runner.actor,
                runner.terminal, reason=f"rolled back to {bundle.ref}; a release rolled back "
                "from is not kept", details={"release": path, "journal": entry.id}))
        journal.close(app.conn, entry.id, "activated", now)
        runner.point("activate:before-commit")
    runner.point("activate:committed")
    for _, path in dropped:
        runner.dirs.remove(path)
    return [path for _, path in dropped] + prune(runner)


def switch_back(runner: Runner, entry: JournalEntry, failures: str) -> None:
    """A failed health check: restore the previous release, restart, and record it."""
    app, dirs = runner.app, runner.dirs
    bundle = get_bundle(app.conn, entry.bundle_id)
    runner.point("switch_back:before")
    dirs.switch(entry.previous_target)
    runner.point("switch_back:after")
    with app.transaction():
        app.trail.append(bundle_event(
            bundle, "update.switched", runner.actor, runner.terminal, outcome="failure",
            reason=f"health check failed: {failures}",
            details={"journal": entry.id, "from": entry.release_path,
                     "to": entry.previous_target, "automatic": True}))
    runner.point("switch_back:recorded")
    runner.restart(entry, bundle, entry.previous_target,
                   f"switched back from {bundle.ref} after a failed health check")
    with app.transaction():
        bundle = get_bundle(app.conn, entry.bundle_id)
        now = app.clock.iso()
        if entry.op == "install":
            transition(app, bundle, State.ROLLED_BACK, runner.actor, runner.terminal,
                       reason=f"health check failed: {failures}", outcome="failure",
                       details={"journal": entry.id, "release": entry.release_path,
                                "restored": entry.previous_target})
            app.conn.execute(
                "INSERT INTO releases (bundle_id, path, status, profile, placement, "
                "created_at, removed_at) VALUES (?, ?, 'failed', ?, ?, ?, ?)",
                (bundle.id, entry.release_path, dumps(entry.profile).decode(),
                 dumps(entry.details.get("placement", {})).decode(), now, now))
        else:
            transition(app, bundle, State.APPROVED, runner.actor, runner.terminal,
                       reason=f"rollback to this release failed its health check: {failures}",
                       outcome="failure", details={"journal": entry.id,
                                                   "restored": entry.previous_target})
            app.conn.execute("UPDATE releases SET status = 'failed', removed_at = ? WHERE "
                             "bundle_id = ? AND path = ? AND status = 'kept'",
                             (now, bundle.id, entry.release_path))
        journal.close(app.conn, entry.id, "rolled_back", now)
        runner.point("rolled_back:before-commit")
    runner.point("rolled_back:committed")
    dirs.remove(entry.release_path)


def prune(runner: Runner) -> list[str]:
    """Keep the current release and the ones before it, `keep_releases` in all."""
    app = runner.app
    keep = max(1, app.settings.updates.keep_releases)
    rows = app.conn.execute(
        "SELECT id, bundle_id, path FROM releases WHERE status IN ('current', 'kept') "
        "ORDER BY status = 'current' DESC, activated_at DESC, id DESC").fetchall()
    removed = []
    for release_id, bundle_id, path in rows[keep:]:
        bundle = get_bundle(app.conn, bundle_id)
        with app.transaction():
            app.conn.execute("UPDATE releases SET status = 'removed', removed_at = ? WHERE "
                             "id = ?", (app.clock.iso(), release_id))
            app.trail.append(bundle_event(
                bundle, "update.release_removed", runner.actor, runner.terminal,
                reason=f"only the last {keep} releases are kept",
                details={"release": path, "keep_releases": keep}))
        runner.point("prune:committed")
        runner.dirs.remove(path)
        removed.append(path)
    return removed


def keep_set(app: Appliance) -> set[str]:
    rows = app.conn.execute("SELECT path FROM releases WHERE status IN ('current', 'kept')")
    keep = {r[0] for r in rows}
    entry = journal.open_entry(app.conn)
    if entry is not None:
        keep.add(entry.release_path)
    return keep


def system_runner(app: Appliance, edges: Edges) -> Runner:
    return Runner(app, SYSTEM_ACTOR, app.terminal, edges)
