"""Provisioning actions: run a playbook (or check it), cancel, browse runs and artifacts
(the inventory's hosts: `provision_inventory.py`). The CLI and the console call these and
nothing below them.

A run is recorded twice in the audit trail: `provision.start` before anything runs (if it
cannot be recorded, nothing runs) and `provision.run` with the result. The playbook runs
in a worker thread; events reach the caller's callback in that thread, in batches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.audit.events import SYSTEM_ACTOR, Actor, Event
from appliance.clock import Clock
from appliance.context import Appliance
from appliance.errors import (
    AuditFailure,
    InvalidInput,
    PermissionDenied,
    ProvisionFailed,
    RunConflict,
)
from appliance.identity.roles import roles_for
from appliance.identity.session import Session
from appliance.provision import artifacts, patterns, proctree, records
from appliance.provision import inventory as inv
from appliance.provision.artifacts import ArtifactChunk, ArtifactInfo
from appliance.provision.events import TaskEvent
from appliance.provision.plan import tasks_per_host
from appliance.provision.records import RunRecord
from appliance.provision.redaction import redact, scrub_text
from appliance.provision.runner import (
    Job,
    JobOutcome,
    JobSpec,
    job_secrets,
    prepare_job_dir,
    request_cancel,
    scrub_job_dir,
)
from appliance.services.access import authorize
from appliance.settings import MAX_RUN_TIMEOUT_S
from appliance.text import one_line

PLAYBOOKS_ENV = "APPLIANCE_PLAYBOOKS"
UPDATE_PLAYBOOK = "update.yml"
# Ansible's own variables decide how and where it connects (ansible_ssh_extra_args can run a
# ProxyCommand, ansible_connection or ansible_python_interpreter run anything): like host
# variables (`inventory.validate`), extra variables may not set them. Only the sudo password
# for a non-root SSH user is asked of the operator; it is redacted like any password.
ALLOWED_ANSIBLE_VARS = frozenset({"ansible_become_password"})
# Where a host's files go and whether its services are touched come from the inventory
# (`provision inventory add --root`): an extra variable would outrank it, and `-e
# appliance_root=/` would turn a sandboxed host into the real system. Every variable a
# selected host defines is refused the same way; these are derived from its root.
HOST_DERIVED_VARS = frozenset({"appliance_root", "appliance_prefix", "appliance_live"})
# One --limit term: a host, a group Ansible always has, or a glob over host-name characters;
# `!` excludes and `&` intersects. No `@file`, `~regex`, subscripts or anything option-like.
_LIMIT_TERM = re.compile(r"^[!&]?([A-Za-z0-9_*?][A-Za-z0-9._*?-]{0,252})$")
MAX_RUNS_PAGE = 1000  # runs listed at once
_LIMIT_HINT = "host names or patterns separated by commas, e.g. gpu-1,gpu-2 or 'gpu-*'"


@dataclass(frozen=True)
class RunRequest:
    """What to run: a playbook of the installed set, on `local` or `cluster`."""

    playbook: str = "site.yml"
    inventory: str = "cluster"
    check: bool = False
    extra_vars: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    timeout_s: int = 3600


def default_playbooks_dir() -> Path:
    """The installed playbooks: $APPLIANCE_PLAYBOOKS, the packaged copy, or the checkout."""
    here = Path(__file__).resolve().parents[2]
    candidates = [os.environ.get(PLAYBOOKS_ENV), "/opt/appliance/playbooks",
                  str(here / "playbooks")]
    for c in candidates:
        if c and (Path(c) / "site.yml").is_file():
            return Path(c)
    raise InvalidInput("the provisioning playbooks are not installed",
                       f"install them from the media or set {PLAYBOOKS_ENV}")


def _playbook(project: Path, name: str) -> str:
    if "/" in name or not name.endswith(".yml") or not (project / name).is_file():
        known = ", ".join(p.name for p in sorted(project.glob("*.yml")))
        raise InvalidInput(f"unknown playbook {name!r}", f"choose one of: {known}")
    return name


class RunHandle:
    """A run in progress in this process: wait for it, or read its progress."""

    def __init__(self, record: RunRecord, job: Job, actor: Actor, terminal: str) -> None:
        self.record = record
        self.job = job
        self.actor = actor  # who started it: `cancel_started` acts as them
        self.terminal = terminal
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds; True once the run and its record are done."""
        return self._done.wait(timeout)

    def progress(self):
        return self.job.tracker.progress()

    def wait(self, timeout: float | None = None) -> RunRecord:
        """The final record; raises what recording the result raised (e.g. AuditFailure)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self.record


# -- runs ------------------------------------------------------------------------------

def start(app: Appliance, session: Session, request: RunRequest,
          on_events: Callable[[list[TaskEvent]], None] | None = None, *,
          playbooks_dir: Path | None = None) -> RunHandle:
    """Record the start, then run the playbook in a worker thread."""
    actor = authorize(app, session, "provision.run", target_type="provision_run",
                      target_id=request.playbook)
    return _launch(app, actor, session.username, session.terminal, request, on_events,
                   playbooks_dir)


def start_update_step(app: Appliance, actor: Actor, terminal: str, request: RunRequest,
                      cause: str, on_events: Callable[[list[TaskEvent]], None] | None = None,
                      *, playbooks_dir: Path | None = None) -> RunHandle:
    """update.yml as a step of an install, rollback or recovery (the lifecycle's restart).

    Not a user action: the caller already holds `update.install` or `update.rollback`
    (checked by its own service), or is the appliance recovering by itself. The run is
    recorded like any other (`provision.start`, `provision.run`), under that actor, with
    `cause` saying why. Nothing but update.yml runs this way; every other playbook needs
    `provision.run` through `start`.
    """
    if request.playbook != UPDATE_PLAYBOOK:
        raise InvalidInput(f"an update step runs {UPDATE_PLAYBOOK} only, not "
                           f"{request.playbook!r}", "run other playbooks as IT")
    allowed = roles_for("update.install") | roles_for("update.rollback")
    if actor != SYSTEM_ACTOR and actor.role not in allowed:
        raise PermissionDenied(f"{actor.username} acting as {actor.role} may not restart "
                               f"serving (needs role: {', '.join(sorted(allowed))})",
                               "only an install, rollback or recovery restarts this way")
    return _launch(app, actor, actor.username, terminal, request, on_events, playbooks_dir,
                   cause)


def _launch(app: Appliance, actor: Actor, started_by: str, terminal: str,
            request: RunRequest, on_events: Callable[[list[TaskEvent]], None] | None,
            playbooks_dir: Path | None, cause: str | None = None) -> RunHandle:
    project = (playbooks_dir or default_playbooks_dir()).resolve()
    playbook = _playbook(project, request.playbook)
    extra = _check_extra_vars(request.extra_vars)
    if not 0 < request.timeout_s <= MAX_RUN_TIMEOUT_S:
        raise InvalidInput(f"timeout {request.timeout_s} s out of range",
                           f"use 1 to {MAX_RUN_TIMEOUT_S} seconds")
    _reap_stale(app)
    hosts = inv.select(inv.load_hosts(app.conn), request.inventory)
    _check_host_overrides(extra, hosts)
    rendered = inv.render(hosts)
    limit = _check_limit(request.limit, rendered.hosts)
    run_id = f"{app.clock.now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    # The tracker counts, and the record shows, the hosts the limit selects; the others
    # are in the inventory (and its digest) but no part of the run.
    spec = JobSpec(run_id=run_id, job_dir=app.layout.jobs / f"provision-{run_id}",
                   project_dir=project, playbook=playbook, inventory_text=rendered.text,
                   known_hosts=rendered.known_hosts,
                   hosts=patterns.selected(limit, rendered.hosts), extra_vars=extra,
                   check=request.check, limit=limit,
                   timeout_s=request.timeout_s)
    pid = os.getpid()
    record = RunRecord(
        id=run_id, playbook=playbook, inventory=request.inventory,
        inventory_digest=rendered.digest, hosts_list=rendered.hosts, check=request.check,
        extra_vars=redact(extra), limit=spec.limit, status="running",
        started_at=app.clock.iso(), started_by=started_by, finished_at=None,
        duration_s=None, rc=None, hosts={}, failure=None, job_dir=str(spec.job_dir),
        owner_host=socket.gethostname(), owner_pid=pid, owner_start=proctree.start_ticks(pid))
    _refuse_overlap(app.conn, record, cause)  # early, before a job dir is made
    try:
        prepare_job_dir(spec)
    except OSError as exc:
        # Full or unwritable: a half-written job dir may hold the inventory's host secrets
        # in clear, and no run or reaper would ever scrub it. Nothing is kept or recorded.
        shutil.rmtree(spec.job_dir, ignore_errors=True)
        raise ProvisionFailed(f"cannot prepare the run's job directory: "
                              f"{exc.strerror or exc}",
                              f"free space in {spec.job_dir.parent}; nothing was run or "
                              "recorded") from exc
    try:
        with app.transaction():
            _refuse_overlap(app.conn, record, cause)  # again under the write lock
            records.insert(app.conn, record)
            app.trail.append(Event(
                action="provision.start", actor=actor, target_type="provision_run",
                target_id=run_id, target_digest=rendered.digest,
                details=_details(record, cause), terminal=terminal))
    except BaseException:
        shutil.rmtree(spec.job_dir, ignore_errors=True)  # fail closed: nothing ran
        raise
    job = Job(spec, tasks_per_host(project, playbook), on_events)
    handle = RunHandle(record, job, actor, terminal)
    handle.thread = threading.Thread(
        target=_work, args=(handle, app.layout.root, app.clock, app.terminal, actor,
                            terminal, cause), name=f"provision-{run_id}")
    handle.thread.start()
    return handle


def run(app: Appliance, session: Session, request: RunRequest,
        on_events: Callable[[list[TaskEvent]], None] | None = None, *,
        playbooks_dir: Path | None = None) -> RunRecord:
    """Start a run and wait for its recorded result."""
    return start(app, session, request, on_events, playbooks_dir=playbooks_dir).wait()


def _work(handle: RunHandle, home: Path, clock: Clock, app_terminal: str, actor: Actor,
          terminal: str, cause: str | None = None) -> None:
    try:
        outcome = handle.job.run()
        try:
            # The caller's connection belongs to its thread; the result gets its own.
            with Appliance.open(home, clock=clock, terminal=app_terminal) as app:
                handle.record = _record_result(app, handle.record, outcome, actor, terminal,
                                               cause)
        except AuditFailure as exc:
            # Not "nothing was changed": the playbook has run, and may have changed hosts.
            raise AuditFailure(
                f"run {handle.run_id} ended {outcome.status}, but its result could not be "
                f"recorded: {exc.message}",
                "the hosts may have changed; once this process has ended the run is closed "
                f"as interrupted, its output kept: `appliance provision show {handle.run_id}`"
                ) from exc
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
        handle._error = exc
    finally:
        handle._done.set()


def _record_result(app: Appliance, rec: RunRecord, outcome: JobOutcome, actor: Actor,
                   terminal: str, cause: str | None = None) -> RunRecord:
    failure = outcome.failure_line
    with app.transaction():
        records.finish(app.conn, rec.id, outcome.status, app.clock.iso(),
                       round(outcome.duration_s, 3), outcome.rc, outcome.hosts, failure)
        final = records.get(app.conn, rec.id)
        app.trail.append(Event(
            action="provision.run", actor=actor, target_type="provision_run",
            target_id=rec.id, target_digest=rec.inventory_digest,
            outcome="success" if outcome.status == "successful" else "failure",
            reason=failure, details={**_details(final, cause),
                                     "killed_processes": outcome.killed_processes,
                                     "stopped_processes": outcome.stopped_processes},
            terminal=terminal))
    return final


def _details(rec: RunRecord, cause: str | None = None) -> dict[str, Any]:
    extra = {"cause": cause} if cause else {}   # a lifecycle step: why it ran
    return {**extra, "playbook": rec.playbook, "mode": rec.mode, "inventory": rec.inventory,
            "inventory_digest": rec.inventory_digest, "hosts": list(rec.targets),
            "limit": rec.limit, "extra_vars": rec.extra_vars, "status": rec.status,
            "host_counts": {h: {k: v for k, v in c.items() if k != "changed_by_role"}
                            for h, c in rec.hosts.items()},
            "duration_s": rec.duration_s, "failure": rec.failure}


def _check_extra_vars(extra: dict[str, Any]) -> dict[str, Any]:
    for key in extra:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInput(f"invalid variable name {key!r}", "use NAME=VALUE")
        if inv.too_deep(extra[key]):
            raise InvalidInput(f"extra variable {key!r} is nested more than "
                               f"{inv.MAX_VAR_DEPTH} deep", "pass a flatter value")
        if not inv.recordable(extra[key]):  # by name only: the value may be a password
            raise InvalidInput(f"extra variable {key!r} cannot be recorded in the audit "
                               "trail", inv.RECORDABLE_HINT)
        if key.lower().startswith("ansible_") and key not in ALLOWED_ANSIBLE_VARS:
            raise InvalidInput(f"extra variable {key!r} may not be set",
                               "Ansible's connection settings come from the inventory; of "
                               "its variables only " + ", ".join(sorted(ALLOWED_ANSIBLE_VARS))
                               + " may be passed")
    try:
        plain = json.loads(json.dumps(extra))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"extra variables are not plain data: {exc}") from exc
    for key, value in plain.items():
        if inv.holds_template(value):
            # By name only: the value may be a password.
            raise InvalidInput(f"extra variable {key!r} holds a template marker "
                               "({{, {% or {#)",
                               "pass plain values; Ansible would run a template on the "
                               "appliance")
    return plain


def _check_host_overrides(extra: dict[str, Any], hosts: list[inv.Host]) -> None:
    """Extra variables outrank the inventory: none may replace what a host defines."""
    defined = set(HOST_DERIVED_VARS)
    for host in hosts:
        inv.check_templates(host)  # Ansible templates host variables as it does extra ones
        defined |= host.hostvars().keys()
    for key in extra:
        if key in defined:
            raise InvalidInput(f"extra variable {key!r} may not be set: the inventory "
                               "defines it for the run's hosts",
                               "a host's settings come from `appliance provision inventory "
                               "add`, e.g. --root for appliance_root")


def _check_limit(limit: str | None, hosts: tuple[str, ...]) -> str | None:
    """Host patterns only: a limit reaches ansible-playbook's command line, where anything
    that looks like an option, a file (`@`) or an unknown name would change what runs."""
    if not limit:
        return None
    if len(limit) > 1000 or limit[0] in "-@" or any(c.isspace() for c in limit):
        # Not echoed: what was typed may hold more than a pattern (a password, say).
        raise InvalidInput("invalid --limit: it must not start with - or @ nor hold spaces",
                           _LIMIT_HINT)
    for i, term in enumerate(patterns.terms(limit), 1):
        m = _LIMIT_TERM.match(term)
        if m is None:  # by position, for the same reason
            raise InvalidInput(f"invalid --limit: term {i} is not a host name or pattern",
                               _LIMIT_HINT)
        name = m.group(1)
        if name not in hosts and name not in inv.GROUPS and not set("*?") & set(name):
            raise InvalidInput(f"--limit names no host of this inventory: {name!r}",
                               f"choose from: {', '.join(hosts)}")
    return limit


def _targets(rec: RunRecord) -> frozenset[str]:
    """The hosts a run may change: its limit's host names, or every host of its inventory
    when the limit holds a pattern, a group or an exclusion (judged on the safe side)."""
    terms = patterns.terms(rec.limit) if rec.limit else []
    if terms and all(t in rec.hosts_list for t in terms):
        return frozenset(terms)
    return frozenset(rec.hosts_list)


def _refuse_overlap(conn: sqlite3.Connection, new: RunRecord, cause: str | None) -> None:
    """Two runs changing one host at once (a package install beside a driver update, a
    restart in the middle of either) leave it in a state neither playbook meant: refuse
    the second. Check mode changes nothing, so it runs beside anything; and an update's
    restart (`cause`) is never refused, so the lifecycle can always switch back."""
    if new.check or cause is not None:
        return
    for rec in records.running(conn):
        shared = _targets(rec) & _targets(new)
        if not rec.check and shared and rec.id != new.id:
            raise RunConflict(f"run {rec.id} ({rec.playbook}, started by {rec.started_by}) "
                              f"is still changing {', '.join(sorted(shared))}")


def _owner_alive(rec: RunRecord) -> bool:
    if rec.owner_host != socket.gethostname():
        return True  # another machine's run: we cannot tell, so we do not judge
    return proctree.alive(rec.owner_pid, rec.owner_start)


def _reap_stale(app: Appliance) -> None:
    """Close runs whose process died (power loss, kill -9), stop what they left and scrub
    their job dirs: the dead process never reached its own scrub, so its inputs still hold
    the secrets (a become password in env/extravars) that `provision artifacts` would show."""
    for rec in records.running(app.conn):
        if _owner_alive(rec):
            continue
        proctree.kill_run(rec.id)
        failure = "the process running it stopped before it finished"
        try:
            removed = scrub_job_dir(Path(rec.job_dir))
        except OSError as exc:
            # The record is closed whatever happens here: a run left "running" would be
            # reaped, and fail, at every later start and cancel. Unscrubbed, nothing is kept.
            shutil.rmtree(rec.job_dir, ignore_errors=True)
            removed = [f"the whole job directory ({type(exc).__name__})"]
        if removed:
            failure += (f"; removed from its job directory as unreadable or unscrubbable: "
                        f"{', '.join(removed)}")
        with app.transaction():
            records.finish(app.conn, rec.id, "interrupted", app.clock.iso(), None, None,
                           rec.hosts, failure)
            app.trail.append(Event(
                action="provision.run", actor=SYSTEM_ACTOR, target_type="provision_run",
                target_id=rec.id, target_digest=rec.inventory_digest, outcome="failure",
                reason="interrupted", details=_details(records.get(app.conn, rec.id))))


def cancel(app: Appliance, session: Session, run_id: str, reason: str | None = None
           ) -> RunRecord:
    """Ask a running run to stop. Works across processes: the run polls a flag file."""
    actor = authorize(app, session, "provision.run", target_type="provision_run",
                      target_id=run_id)
    reason = one_line(reason, "the reason") if reason else None
    _reap_stale(app)
    rec = records.get(app.conn, run_id)
    if rec.finished:
        raise InvalidInput(f"run {run_id} already ended ({rec.status})", "nothing to cancel")
    with app.transaction():
        app.trail.append(Event(
            action="provision.cancel", actor=actor, target_type="provision_run",
            target_id=run_id, reason=reason, details={"playbook": rec.playbook},
            terminal=session.terminal))
    request_cancel(rec.job_dir)
    return rec


def cancel_started(app: Appliance, handle: RunHandle, reason: str | None = None
                   ) -> RunRecord:
    """Stop a run this process started, as whoever started it, with no fresh authorisation.

    Holding the handle is the authority: following a run is not session activity, so a run
    longer than the idle limit would otherwise leave its starter unable to stop it (Ctrl-C
    answered "session expired" while the playbook went on). Stopping is the safe side, so
    the flag is dropped before the `provision.cancel` event is written: a cancel that cannot
    be recorded still stops the run, whose `provision.run` event then says `cancelled`.
    """
    reason = one_line(reason, "the reason") if reason else None
    if handle.done:
        raise InvalidInput(f"run {handle.run_id} already ended ({handle.record.status})",
                           "nothing to cancel")
    request_cancel(Path(handle.record.job_dir))
    with app.transaction():
        app.trail.append(Event(
            action="provision.cancel", actor=handle.actor, target_type="provision_run",
            target_id=handle.run_id, reason=reason,
            details={"playbook": handle.record.playbook, "by": "the run's own handle"},
            terminal=handle.terminal))
    return handle.record


def _shown(rec: RunRecord) -> RunRecord:
    if rec.status == "running" and not _owner_alive(rec):
        return replace(rec, status="interrupted")
    return rec


def list_runs(app: Appliance, session: Session, limit: int = 50, before: str | None = None
              ) -> list[RunRecord]:
    """Newest first, `limit` of them (1 to MAX_RUNS_PAGE), older than run `before` if given."""
    authorize(app, session, "provision.view")
    if not 0 < limit <= MAX_RUNS_PAGE:
        # SQLite reads a negative LIMIT as no limit at all: every run, not "-5".
        raise InvalidInput(f"cannot list {limit} runs", f"use --limit 1 to {MAX_RUNS_PAGE}")
    if before is not None:
        records.get(app.conn, before)  # an unknown run is an error, not "no runs yet"
    return [_shown(r) for r in records.page(app.conn, limit, before)]


def get_run(app: Appliance, session: Session, run_id: str) -> RunRecord:
    authorize(app, session, "provision.view", target_type="provision_run", target_id=run_id)
    return _shown(records.get(app.conn, run_id))


def run_events(app: Appliance, session: Session, run_id: str) -> list[TaskEvent]:
    """The run's task events, replayed from its stored job events (history view). While it
    runs they are not scrubbed yet (see `_unscrubbed`): a failure's message may quote a
    secret (a task's name too, templated), so each is filtered of the secrets its inputs
    hold, and none is shown when those inputs cannot be read."""
    rec = get_run(app, session, run_id)
    events = artifacts.replay_events(Path(rec.job_dir), rec.id, rec.hosts_list)
    if not _unscrubbed(rec):
        return events
    hidden = job_secrets(Path(rec.job_dir))
    if hidden is None:
        return []
    return [dataclasses.replace(e, message=scrub_text(e.message, hidden),
                                task=scrub_text(e.task, hidden)) for e in events]


def _unscrubbed(rec: RunRecord) -> bool:
    """Whether the run's job dir may still hold secrets in clear: until its record is
    closed (by the run, or by the reaper for a dead one), which happens only after the
    scrub; a dead run not yet reaped shows as interrupted but has no finish time. Its
    inputs hold the become password and host secrets, its output what tasks printed;
    read-only roles may list runs, so nothing of it is shown before then."""
    return rec.finished_at is None


def list_artifacts(app: Appliance, session: Session, run_id: str) -> list[ArtifactInfo]:
    """A run's stored files; none while it is running (see `_unscrubbed`)."""
    rec = get_run(app, session, run_id)
    if _unscrubbed(rec):
        return []
    return artifacts.list_files(Path(rec.job_dir))


def read_artifact(app: Appliance, session: Session, run_id: str, name: str,
                  offset: int = 0, limit: int = artifacts.PAGE) -> ArtifactChunk:
    """One page of an artifact's text; page on with `next_offset` (None at the end)."""
    rec = get_run(app, session, run_id)
    if _unscrubbed(rec):
        raise InvalidInput(f"run {run_id} has not ended: its files are shown once it has",
                           "until then they hold its inputs and output unredacted")
    chunk = artifacts.read_page(Path(rec.job_dir), name, offset, limit)
    if chunk is None:
        raise InvalidInput(f"no artifact {name!r} in run {run_id}",
                           f"list them with `appliance provision artifacts {run_id}`")
    return chunk


def list_playbooks(app: Appliance, session: Session, playbooks_dir: Path | None = None
                   ) -> list[str]:
    authorize(app, session, "provision.view")
    project = playbooks_dir or default_playbooks_dir()
    return [p.name for p in sorted(project.glob("*.yml"))]
