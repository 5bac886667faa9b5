"""Update actions: list, check, show (the approval view), approve, reject, install, roll back,
status. One function per user action; each checks its permission, and first finishes or
undoes an install that a crash interrupted (`recover`), so every entry point is a start.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from appliance.audit import query
from appliance.audit.events import Actor, Event
from appliance.audit.query import EventFilter
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.errors import ApplianceError, AuditFailure
from appliance.hardware import GpuSource, TakenReading, read_inventory
from appliance.hardware.profiles import EngineProfile, Selection
from appliance.identity.roles import granting_role
from appliance.identity.session import Session
from appliance.services import hardware
from appliance.services.access import authorize
from appliance.services.signing import SignatureRequest, require_meaning, signing
from appliance.settings import UpdatePolicy
from appliance.updates import approval as ap
from appliance.updates import journal, view
from appliance.updates.evidence import CarriedEvidenceGate, EvidenceGate
from appliance.updates.fit import (
    bundle_profiles,
    external_bases,
)
from appliance.updates.install import (
    Edges,
    InstallResult,
    Runner,
    begin,
    carry_out,
    keep_set,
    open_journal,
    plan_release,
    release_dirs,
    system_runner,
)
from appliance.updates.lifecycle import (
    NEXT_STEP,
    BundleRecord,
    State,
    active_bundle,
    all_bundles,
    bundle_event,
    find_bundle,
    get_bundle,
    move,
    refuse,
    require,
    state_named,
    transition,
)
from appliance.updates.recovery import consistency, describe, recover, recover_locked
from appliance.updates.releases import InstallLock
from appliance.updates.verification import verify_bundle


def _startup(app: Appliance, session: Session, edges: Edges | None = None) -> None:
    """Recover an interrupted install before anything else (cheap when there is none)."""
    if journal.open_entry(app.conn) is not None or release_dirs(app).root.is_dir():
        recover(app, edges, found_by=session.username)


def list_updates(app: Appliance, session: Session, state: str | None = None
                 ) -> list[dict[str, Any]]:
    """Bundles newest first, only those in `state` if given (an unknown state is refused,
    not answered with an empty list that reads as "nothing imported")."""
    authorize(app, session, "update.view", target_type="bundle", target_id="*")
    wanted = None if state is None else state_named(state)
    _startup(app, session)
    return [b.summary() for b in all_bundles(app.conn, wanted)]


# --- automatic checks: IMPORTED -> VERIFIED -> EVALUATED -> PENDING_APPROVAL ---------------

def check(app: Appliance, session: Session, ref: str, gate: EvidenceGate | None = None
          ) -> BundleRecord:
    """Run the automatic steps a bundle is waiting for; a failed one rejects it with reasons."""
    actor = authorize(app, session, "update.install", target_type="bundle", target_id=ref)
    _startup(app, session)
    return _advance(app, session, actor, find_bundle(app.conn, ref), gate)


def _advance(app: Appliance, session: Session, actor: Actor, bundle: BundleRecord,
             gate: EvidenceGate | None) -> BundleRecord:
    store = ContentStore(app.layout.store)
    if bundle.state == State.IMPORTED:
        result = verify_bundle(bundle, store, app.layout.releases,
                               lambda d: _base_available(app, d))
        to = State.VERIFIED if result.ok else State.REJECTED
        with app.transaction():
            ap.save_check(app.conn, bundle.id, "verification", result.ok, result.to_dict(),
                          app.clock.iso())
            bundle = transition(app, bundle, to, actor, session.terminal,
                                reason=result.summary(),
                                outcome="success" if result.ok else "failure",
                                details={"verification": result.to_dict()})
    if bundle.state == State.VERIFIED:
        gate = gate or CarriedEvidenceGate(app.settings.evaluation)

        def read(sha: str, size: int) -> bytes:
            return store.path_of(sha).read_bytes()[:size]

        result = gate.evaluate(bundle, read)
        to = State.EVALUATED if result.passed else State.REJECTED
        with app.transaction():
            ap.save_check(app.conn, bundle.id, "evaluation", result.passed, result.to_dict(),
                          app.clock.iso())
            bundle = transition(app, bundle, to, actor, session.terminal,
                                reason=result.summary(),
                                outcome="success" if result.passed else "failure",
                                details={"evaluation": result.to_dict(),
                                         "gates": _gates(app)})
    if bundle.state == State.EVALUATED:
        with app.transaction():
            required = app.settings.approval.required_admin_signatures
            bundle = transition(app, bundle, State.PENDING_APPROVAL, actor, session.terminal,
                                reason=f"verified and evaluated: waiting for {required} "
                                       "admin signature(s)",
                                details={"required_signatures": required})
    return bundle


def _gates(app: Appliance) -> dict[str, Any]:
    g = app.settings.evaluation
    return {"require_evidence": g.require_evidence, "min_metrics": g.min_metrics,
            "max_metrics": g.max_metrics}


def _base_available(app: Appliance, digest: str) -> bool:
    return app.conn.execute(
        "SELECT 1 FROM bundle_components c JOIN bundles b ON b.id = c.bundle_id WHERE "
        "c.kind = 'base_model' AND c.digest = ? AND b.state IN ('APPROVED', 'INSTALLING', "
        "'ACTIVE') LIMIT 1", (digest,)).fetchone() is not None


def _select(app: Appliance, session: Session, bundle: BundleRecord,
            source: GpuSource | None, pinned: str | None) -> Selection:
    """Hardware fit on the bundle's own engines (recorded as a hardware.fit event)."""
    profiles = bundle_profiles(bundle, external_bases(app.conn, bundle))
    return hardware.fit(app, session, profiles, pinned, trtllm_runtime(app.settings.updates),
                        source=source, target_id=bundle.ref, target_digest=bundle.digest)


def trtllm_runtime(policy: UpdatePolicy) -> set[str] | None:
    """The TensorRT-LLM versions an engine may be built with: the configured runtime, else
    the installed tensorrt_llm package's (read from its metadata, never imported), else
    None: not checked."""
    if policy.trtllm_runtime:
        return {policy.trtllm_runtime}
    try:
        return {metadata.version("tensorrt_llm")}
    except metadata.PackageNotFoundError:
        return None


# --- the approval view -------------------------------------------------------------------

def show(app: Appliance, session: Session, ref: str, source: GpuSource | None = None,
         pinned: str | None = None) -> dict[str, Any]:
    """Everything an approver must see, recorded as `update.viewed` (approval needs it)."""
    actor = authorize(app, session, "update.view", target_type="bundle", target_id=ref)
    # The GPUs first: a reading that could not be read refused the view only after the
    # bundle had been verified, evaluated and submitted.
    source = TakenReading(read_inventory(source))
    _startup(app, session)
    bundle = find_bundle(app.conn, ref)
    checker = granting_role(session.roles, "update.install")
    if bundle.state in (State.IMPORTED, State.VERIFIED, State.EVALUATED) and checker:
        bundle = _advance(app, session, session.actor(checker), bundle, None)
    selection = _select(app, session, bundle, source, pinned)
    active = active_bundle(app.conn)
    bases = external_bases(app.conn, bundle)
    verification = ap.stored_check(app.conn, bundle.id, "verification")
    evaluation = ap.stored_check(app.conn, bundle.id, "evaluation")
    required = app.settings.approval.required_admin_signatures
    signed = ap.approvals(app.conn, bundle, required)
    data = {
        "bundle": bundle.summary(), "description": _description(bundle),
        "publisher": bundle.publisher, "signers": view.signers(bundle),
        "version": view.version_line(bundle, active),
        "components": view.component_diff(bundle, active, bases),
        "hardware": selection.to_dict(),
        "verification": verification[1] if verification else None,
        "evaluation": evaluation[1] if evaluation else None,
        "gates": _gates(app),
        "approvals": {"required": required,
                      "signatures": [s.manifestation() for s in signed.signers]},
        "history": view.history(app.conn, bundle),
    }
    with app.transaction():
        app.trail.append(bundle_event(
            bundle, "update.viewed", actor, session.terminal,
            details={"state": str(bundle.state),
                     "profile": selection.chosen.id if selection.chosen else None,
                     "pinned": pinned, "components": len(bundle.components)}))
    return data


def _description(bundle: BundleRecord) -> str:
    try:
        return str(json.loads(bundle.description).get("description", ""))
    except ValueError:
        return ""


# --- approve / reject (electronic signatures) ---------------------------------------------

def _signable(app: Appliance, session: Session, actor: Actor, bundle: BundleRecord,
              step: str, req: SignatureRequest, meaning: str) -> None:
    require_meaning(req, meaning)
    if bundle.state != State.PENDING_APPROVAL:
        raise refuse(app, actor, session.terminal, bundle, step, *_not_pending(bundle, step))


def _not_pending(bundle: BundleRecord, step: str) -> tuple[str, str]:
    return (f"{bundle.ref} is {bundle.state}: {step} is allowed only while it is "
            f"{State.PENDING_APPROVAL}", NEXT_STEP[bundle.state])


class _Stale(Exception):
    """Found in the signing transaction (which it rolls back); recorded as a refusal after."""

    def __init__(self, bundle: BundleRecord, message: str, hint: str) -> None:
        super().__init__(message)
        self.bundle, self.message, self.hint = bundle, message, hint


def approve(app: Appliance, session: Session, ref: str, req: SignatureRequest,
            source: GpuSource | None = None, pinned: str | None = None) -> dict[str, Any]:
    actor = authorize(app, session, "update.approve", target_type="bundle", target_id=ref)
    _startup(app, session)
    bundle = find_bundle(app.conn, ref)
    _signable(app, session, actor, bundle, "approve", req, "approved")
    term = session.terminal
    if bundle.imported_by == session.username:
        raise refuse(app, actor, term, bundle, "approve",
                     f"{session.username} imported {bundle.ref} and may not approve it",
                     "another admin approves it (separation of duties)")
    selection = _select(app, session, bundle, source, pinned)
    if not selection.ok and pinned and selection.fitting:
        # Not "no engine profile fits": others do.
        raise refuse(app, actor, term, bundle, "approve", f"{bundle.ref}: {selection.note}",
                     f"pin one that fits ({', '.join(selection.fitting)}), or leave out "
                     "--profile")
    if not selection.ok:
        raise refuse(app, actor, term, bundle, "approve",
                     f"no engine profile of {bundle.ref} fits this host: {selection.note}",
                     "`appliance update show`, or `o` in the console, gives each profile's "
                     "reason")
    profile = selection.chosen.id
    if not ap.viewed(app.conn, session.username, bundle, profile):
        raise refuse(app, actor, term, bundle, "approve",
                     f"{session.username} has not opened the approval view of {bundle.ref} "
                     f"as it is now (profile {profile})",
                     f"open it first: `appliance update show {bundle.ref}`, or `o` in the console")
    evaluation = ap.stored_check(app.conn, bundle.id, "evaluation")
    record = ap.approval_record(bundle, profile, pinned, evaluation[1] if evaluation else None)
    required = max(1, app.settings.approval.required_admin_signatures)
    before = ap.approvals(app.conn, bundle, required, record)
    if any(s.username == session.username for s in before.signers):
        raise refuse(app, actor, term, bundle, "approve",
                     f"{session.username} already approved {bundle.ref}",
                     f"policy needs {required} different admins")
    try:
        with signing(app, session, req, meaning="approved", permission="update.approve",
                     target=("bundle", ref)) as signer:
            # Read again under the write lock: another admin may have rejected or approved it
            # since the checks above, and two admins signing at once both count.
            current = get_bundle(app.conn, bundle.id)
            if current.state != State.PENDING_APPROVAL:
                raise _Stale(current, *_not_pending(current, "approve"))
            now = ap.approvals(app.conn, bundle, required, record)
            if any(s.username == session.username for s in now.signers):
                raise _Stale(current, f"{session.username} already approved {bundle.ref}",
                             f"policy needs {required} different admins")
            count = len(now.signers) + 1
            details = {"bundle_digest": bundle.digest, "profile": profile, "pinned": pinned,
                       "signatures": count, "required": required,
                       "hardware": selection.to_dict()}
            if count >= required:
                action, old, new = move(app.conn, current, State.APPROVED)
            else:
                action, old, new = "update.approval_signed", None, {}
            sig = signer.apply(record_type="bundle", record_id=bundle.ref, content=record,
                               event=Event(action=action, actor=actor, old=old,
                                           new={**new, "approval": record}, details=details))
    except _Stale as stale:
        raise refuse(app, actor, term, stale.bundle, "approve", stale.message,
                     stale.hint) from None
    return {"bundle": bundle.ref, "state": str(get_bundle(app.conn, bundle.id).state),
            "signatures": count, "required": required, "signature": sig.manifestation(),
            "record": record}


def reject(app: Appliance, session: Session, ref: str, req: SignatureRequest
           ) -> dict[str, Any]:
    actor = authorize(app, session, "update.approve", target_type="bundle", target_id=ref)
    _startup(app, session)
    bundle = find_bundle(app.conn, ref)
    _signable(app, session, actor, bundle, "reject", req, "rejected")
    if not req.reason.strip():
        raise refuse(app, actor, session.terminal, bundle, "reject",
                     "a rejection needs a reason", "pass --reason")
    if not ap.viewed(app.conn, session.username, bundle, _viewed_profile(app, session, bundle)):
        raise refuse(app, actor, session.terminal, bundle, "reject",
                     f"{session.username} has not opened the approval view of {bundle.ref}",
                     f"open it first: `appliance update show {bundle.ref}`, or `o` in the console")
    record = {"type": "update-rejection", "bundle": bundle.ref, "digest": bundle.digest,
              "reason": req.reason.strip()}
    with signing(app, session, req, meaning="rejected", permission="update.approve",
                 target=("bundle", ref)) as signer:
        action, old, new = move(app.conn, get_bundle(app.conn, bundle.id), State.REJECTED,
                                req.reason.strip())
        sig = signer.apply(record_type="bundle", record_id=bundle.ref, content=record,
                           event=Event(action=action, actor=actor, old=old, new=new,
                                       details={"bundle_digest": bundle.digest}))
    return {"bundle": bundle.ref, "state": "REJECTED", "signature": sig.manifestation()}


def _viewed_profile(app: Appliance, session: Session, bundle: BundleRecord) -> str | None:
    """The profile of this user's latest view (a rejection does not depend on hardware)."""
    seen = query.newest(app.conn, EventFilter(action="update.viewed", actor=session.username,
                                              target_id=bundle.ref))
    return seen.data["details"].get("profile") if seen else None


# --- install, rollback, status -------------------------------------------------------------

def _lock(app: Appliance, actor: Actor, session: Session, bundle_ref: str, step: str
          ) -> InstallLock:
    lock = InstallLock(app.layout.releases)
    if not lock.acquire():
        try:
            bundle = find_bundle(app.conn, bundle_ref)   # the refusal names its digest
        except ApplianceError:
            bundle = None
        raise refuse(app, actor, session.terminal, bundle, step,
                     "another install, rollback or recovery is running, or a backup",
                     "wait for it to finish, then look at `appliance update status`",
                     details={"bundle": bundle_ref})
    return lock


def _require_current_link(app: Appliance, actor: Actor, session: Session,
                          bundle: BundleRecord, step: str) -> None:
    """`current` must be absent or a link to a release the records hold to be switched: a
    directory or file there, or a link an install never made, is damage nobody recorded,
    refused (and recorded) before anything changes."""
    dirs = release_dirs(app)
    problem = dirs.current_problem()
    if problem:
        raise refuse(app, actor, session.terminal, bundle, step, problem,
                     "move it out of releases/, then run `appliance update status`; nothing "
                     "was switched")
    odd = dirs.current_oddity(keep_set(app))
    if odd:
        raise refuse(app, actor, session.terminal, bundle, step, odd,
                     "nothing was switched; `appliance update status --deep` compares "
                     "releases/ with the records: report it to the security officer")


def _stopped(app: Appliance, exc: AuditFailure, op: str, bundle: BundleRecord
             ) -> AuditFailure:
    """The database refused a step (a full disk) after the operation began: something did
    change, so say where it stopped and what finishes or undoes it."""
    entry = journal.open_entry(app.conn)
    where = f" at step {entry.step}" if entry is not None else ""
    return AuditFailure(f"{exc.message}: the {op} of {bundle.ref} stopped{where}",
                        f"free disk space, then run `appliance update status`: it finishes "
                        f"or undoes the {op}")


def install(app: Appliance, session: Session, ref: str, edges: Edges | None = None
            ) -> InstallResult:
    """Install an approved bundle: lay out, switch, restart, health-check, keep or roll back."""
    actor = authorize(app, session, "update.install", target_type="bundle", target_id=ref)
    edges = edges or Edges()
    lock = _lock(app, actor, session, ref, "install")
    try:
        recover_locked(system_runner(app, edges), session.username)
        bundle = find_bundle(app.conn, ref)
        term = session.terminal
        require(app, actor, term, bundle, State.INSTALLING, "install")
        active = active_bundle(app.conn)
        if active and active.name == bundle.name and active.version >= bundle.version:
            raise refuse(app, actor, term, bundle, "install",
                         f"{bundle.ref} is not newer than the active {active.ref}",
                         f"going back is a signed rollback: `appliance update rollback "
                         f"{bundle.ref}`")
        if app.conn.execute("SELECT 1 FROM releases WHERE bundle_id = ? AND status = 'kept'",
                            (bundle.id,)).fetchone():
            raise refuse(app, actor, term, bundle, "install",
                         f"{bundle.ref} was installed before and is kept for rollback",
                         f"use `appliance update rollback {bundle.ref}`")
        required = max(1, app.settings.approval.required_admin_signatures)
        signed = ap.approvals(app.conn, bundle, required)
        if not signed.complete:
            raise refuse(app, actor, term, bundle, "install",
                         f"{bundle.ref} has {len(signed.signers)} valid approval signature(s); "
                         f"policy needs {required}",
                         "approval signatures must bind the bundle as it is now")
        assert signed.record is not None
        selection = _select(app, session, bundle, edges.source, signed.record["profile"])
        if not selection.ok:
            raise refuse(app, actor, term, bundle, "install",
                         f"the approved profile {signed.record['profile']} no longer fits this "
                         f"host: {selection.note}", "fix the hardware, or import and approve "
                         "a bundle with a profile that fits")
        _require_current_link(app, actor, session, bundle, "install")
        plan = plan_release(app, bundle, selection.chosen, selection.to_dict())
        runner = Runner(app, actor, term, edges)
        entry = begin(runner, plan)
        try:
            return carry_out(runner, entry, plan)
        except AuditFailure as exc:
            raise _stopped(app, exc, "install", bundle) from exc
    finally:
        lock.release()


def rollback(app: Appliance, session: Session, ref: str, req: SignatureRequest,
             edges: Edges | None = None) -> InstallResult:
    """Switch back to a kept release; an admin signs it."""
    actor = authorize(app, session, "update.rollback", target_type="bundle", target_id=ref)
    edges = edges or Edges()
    if edges.source is not None:
        # A replayed reading is first read after the switch, by the health check: an
        # unreadable one signed, switched, restarted serving and switched back. Read it now.
        read_inventory(edges.source)
    lock = _lock(app, actor, session, ref, "rollback")
    try:
        recover_locked(system_runner(app, edges), session.username)
        target = find_bundle(app.conn, ref)
        term = session.terminal
        current = active_bundle(app.conn)
        row = app.conn.execute("SELECT path, profile FROM releases WHERE bundle_id = ? AND "
                               "status = 'kept'", (target.id,)).fetchone()
        if current is None or row is None or target.state != State.APPROVED:
            raise refuse(app, actor, term, target, "rollback",
                         f"{target.ref} has no kept release to roll back to",
                         "see the kept releases in `appliance update status`")
        require_meaning(req, "approved")
        _require_current_link(app, actor, session, target, "rollback")
        profile = EngineProfile.from_dict(json.loads(row[1]))
        plan = plan_release(app, target, profile, {}, rel=row[0])
        runner = Runner(app, actor, term, edges)
        dirs = release_dirs(app)
        record = ap.rollback_record(target, current, row[0])
        with signing(app, session, req, meaning="approved", permission="update.rollback",
                     target=("bundle", ref)) as signer:
            entry_id = open_journal(app, "rollback", plan, current, dirs.read_current())
            action, old, new = move(app.conn, target, State.INSTALLING, req.reason.strip())
            signer.apply(record_type="bundle", record_id=target.ref, content=record,
                         event=Event(action=action, actor=actor, old=old, new=new,
                                     details={"bundle_digest": target.digest, "op": "rollback",
                                              "journal": entry_id, "release": row[0],
                                              "from": current.ref,
                                              "from_digest": current.digest}))
            runner.point("started:before-commit")
        runner.point("started:committed")
        try:
            return carry_out(runner, journal.get(app.conn, entry_id), plan)
        except AuditFailure as exc:
            raise _stopped(app, exc, "rollback", target) from exc
    finally:
        lock.release()


def status(app: Appliance, session: Session, edges: Edges | None = None,
           deep: bool = False) -> dict[str, Any]:
    """Find and resolve an interrupted install, then say what runs and whether the records
    agree with the disk (`deep`: re-hash the kept and current releases too; a release
    directory only ever appears under its final name complete, so the quick check trusts
    names and links)."""
    authorize(app, session, "update.view", target_type="releases", target_id="status")
    report = recover(app, edges, found_by=session.username)
    data = describe(app)
    data["recovery"] = report.to_dict()
    data["problems"] = [] if report.busy else consistency(app, deep=deep)
    data["deep"] = deep
    data["consistent"] = not data["problems"]
    return data
