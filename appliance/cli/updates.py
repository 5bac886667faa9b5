"""`appliance update ...`: the lifecycle of imported bundles, from review to running release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    UserOpt,
    emit,
    login,
    open_app,
    read_secret,
)
from appliance.errors import InvalidInput

app = typer.Typer(help="Review, approve, install and roll back updates (signed bundles).",
                  no_args_is_help=True)

RefArg = Annotated[str, typer.Argument(help="The bundle: NAME@VERSION, its id, or a digest "
                                            "prefix.")]
ReasonReq = Annotated[str, typer.Option("--reason", help="Why (recorded with the signature).")]
AckOpt = Annotated[bool, typer.Option(
    "--acknowledge-statement",
    help="Accept the electronic-signature statement (needed for your first signature).")]
ReadingOpt = Annotated[Path | None, typer.Option(
    "--reading", envvar="APPLIANCE_GPU_READING",
    help="Replay a GPU reading (from `hw record`) instead of asking NVML; recorded as such.")]
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", help="Pin an engine profile (it must still fit this host).")]


def _source(reading: Path | None):
    from appliance.hardware import RecordedSource
    return RecordedSource(reading) if reading else None


def _edges(reading: Path | None):
    from appliance.updates.install import Edges
    return Edges(source=_source(reading))


def _signed(ctx: typer.Context, user: str | None, password_stdin: bool, meaning: str,
            reason: str, ack: bool):
    """One password for the login and the signature, as `users review` does (11.200(a))."""
    from appliance.services.signing import SignatureRequest

    if not user:
        raise InvalidInput("this command is signed by a person", "pass --user NAME")
    password = read_secret(f"Password for {user} (signature): ", password_stdin)
    return password, SignatureRequest(meaning, reason, password, username=user,
                                      acknowledge_statement=ack)


@app.command("list")
def list_(ctx: typer.Context, state: Annotated[str | None, typer.Option(
        "--state", help="Only bundles in this state.")] = None,
        user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
        as_json: JsonOpt = False) -> None:
    """Bundles on this appliance by state, newest first."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        rows = updates.list_updates(appl, login(ctx, appl, user, password_stdin), state)
    lines = [f"{r['ref']:<28} {r['state']:<17} {r['publisher']:<20} {r['digest'][:12]}  "
             f"imported by {r['imported_by']}" for r in rows] or ["no bundles imported"]
    emit(rows, as_json, "\n".join(lines))


@app.command("check")
def check(ctx: typer.Context, ref: RefArg, user: UserOpt = None,
          password_stdin: PasswordStdinOpt = False, as_json: JsonOpt = False) -> None:
    """Run the automatic steps (verification, evaluation gates, submission for approval)."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        bundle = updates.check(appl, login(ctx, appl, user, password_stdin), ref)
    emit(bundle.summary(), as_json,
         f"{bundle.ref}: {bundle.state}" + (f" ({bundle.state_reason})"
                                            if bundle.state_reason else ""))


def _view_text(v: dict[str, Any]) -> str:
    b = v["bundle"]
    lines = [f"{b['ref']}  {b['state']}  digest {b['digest']}",
             f"publisher: {v['publisher']}   imported {b['imported_at']} by {b['imported_by']}",
             f"version {v['version']['version']}: {v['version']['relation']}"]
    if b.get("state_reason"):
        lines.append(f"reason: {b['state_reason']}")
    lines.append("signers:")
    lines += [f"  {s['component']:<20} {s['method']} {s['keyid'] or s['identity']}"
              for s in v["signers"]]
    lines.append("components (against the active release):")
    for c in v["components"]:
        base = c.get("base_model")
        extra = f"  needs base {base['name']} ({base['where']})" if base else ""
        lines.append(f"  {c['change']:<9} {c['name']:<20} {c['kind']:<19} {c['size']:>12} B "
                     f"{c['files']:>4} files{extra}")
    hw = v["hardware"]
    lines.append(f"hardware: {hw['note']}")
    lines += [f"  {'fits' if c['fits'] else 'no  '} {c['profile_id']}: {c['reason']}"
              for c in hw["candidates"]]
    ev = v["evaluation"]
    if ev:
        lines.append(f"evaluation ({ev['gate']}): {'passed' if ev['passed'] else 'FAILED'}")
        lines += [f"  evidence {e['component']} on {e['golden_set']} ({e['samples']} samples): "
                  + ", ".join(f"{k} {val}" for k, val in sorted(e["metrics"].items()))
                  for e in ev["evidence"]]
        lines += [f"  {c['metric']} = {c['value']} ({c['bound']} {c['threshold']}) "
                  f"{'ok' if c['ok'] else 'FAILS'}" for c in ev["checks"]]
        lines += [f"  {r}" for r in ev["reasons"]]
    ap = v["approvals"]
    lines.append(f"approvals: {len(ap['signatures'])} of {ap['required']}")
    lines += [f"  {s['meaning']} by {s['name']} ({s['username']}) at {s['ts']}: {s['reason']}"
              for s in ap["signatures"]]
    lines.append("history:")
    lines += [f"  {h['seq']:>6} {h['ts']} {h['action']:<26} {h['actor']:<10} {h['outcome']}"
              + (f"  [{h['signature']}]" if h["signature"] else "")
              + (f"  {h['reason']}" if h["reason"] else "") for h in v["history"]]
    return "\n".join(lines)


@app.command("show")
def show(ctx: typer.Context, ref: RefArg, reading: ReadingOpt = None, profile: ProfileOpt = None,
         user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
         as_json: JsonOpt = False) -> None:
    """The approval view: publisher, signers, diff, hardware profile, evidence, history.
    Opening it is recorded; approving needs it."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        data = updates.show(appl, login(ctx, appl, user, password_stdin), ref,
                            _source(reading), profile)
    emit(data, as_json, _view_text(data))


@app.command("approve")
def approve(ctx: typer.Context, ref: RefArg, reason: ReasonReq, reading: ReadingOpt = None,
            profile: ProfileOpt = None, user: UserOpt = None,
            password_stdin: PasswordStdinOpt = False, acknowledge_statement: AckOpt = False,
            as_json: JsonOpt = False) -> None:
    """Sign the approval (meaning "approved"); open it with `update show` first."""
    from appliance.services import auth, updates

    password, req = _signed(ctx, user, password_stdin, "approved", reason,
                            acknowledge_statement)
    with open_app(ctx) as appl:
        out = updates.approve(appl, auth.login(appl, user, password), ref, req,
                              _source(reading), profile)
    s = out["signature"]
    emit(out, as_json, f"{out['bundle']}: {out['state']} ({out['signatures']} of "
                       f"{out['required']} approvals); signed {s['meaning']} by {s['name']} "
                       f"at {s['ts']}")


@app.command("reject")
def reject(ctx: typer.Context, ref: RefArg, reason: ReasonReq, user: UserOpt = None,
           password_stdin: PasswordStdinOpt = False, acknowledge_statement: AckOpt = False,
           as_json: JsonOpt = False) -> None:
    """Sign a rejection (meaning "rejected"); the reason is required."""
    from appliance.services import auth, updates

    password, req = _signed(ctx, user, password_stdin, "rejected", reason,
                            acknowledge_statement)
    with open_app(ctx) as appl:
        out = updates.reject(appl, auth.login(appl, user, password), ref, req)
    s = out["signature"]
    emit(out, as_json, f"{out['bundle']}: REJECTED; signed by {s['name']} at {s['ts']}: "
                       f"{s['reason']}")


def _install_text(r) -> str:
    lines = [f"{r.bundle}: {r.outcome} ({r.op} of release {r.release}, previous "
             f"{r.previous or 'none'})"]
    if r.placement:
        p = r.placement
        lines.append(f"  layout: {p['hardlink']} hard links, {p['reflink']} reflinks, "
                     f"{p['copy']} copies ({p['copied_bytes']} bytes copied)"
                     + ("; releases/ is on another file system than the store"
                        if p["cross_filesystem"] else ""))
    lines += [f"  restart: {x['detail']}" for x in r.restarts]
    lines += [f"  {'ok  ' if h['ok'] else 'FAIL'} {h['name']}: {h['detail']}" for h in r.health]
    if r.reason:
        lines.append(f"  reason: {r.reason}")
    return "\n".join(lines)


@app.command("install")
def install(ctx: typer.Context, ref: RefArg, reading: ReadingOpt = None, user: UserOpt = None,
            password_stdin: PasswordStdinOpt = False, as_json: JsonOpt = False) -> None:
    """Install an approved bundle; a failed health check switches back automatically."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        result = updates.install(appl, login(ctx, appl, user, password_stdin), ref,
                                 _edges(reading))
    emit(result.to_dict(), as_json, _install_text(result))
    if result.outcome != "activated":
        raise typer.Exit(11)


@app.command("rollback")
def rollback(ctx: typer.Context, ref: RefArg, reason: ReasonReq, reading: ReadingOpt = None,
             user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
             acknowledge_statement: AckOpt = False, as_json: JsonOpt = False) -> None:
    """Switch back to a kept release (an admin signs it)."""
    from appliance.services import auth, updates

    password, req = _signed(ctx, user, password_stdin, "approved", reason,
                            acknowledge_statement)
    with open_app(ctx) as appl:
        result = updates.rollback(appl, auth.login(appl, user, password), ref, req,
                                  _edges(reading))
    emit(result.to_dict(), as_json, _install_text(result))
    if result.outcome != "activated":
        raise typer.Exit(11)


@app.command("status")
def status(ctx: typer.Context, user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
           as_json: JsonOpt = False) -> None:
    """What runs now; finds and completes or undoes an interrupted install."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        st = updates.status(appl, login(ctx, appl, user, password_stdin))
    rec = st["recovery"]
    lines = [f"active: {st['active']['ref'] if st['active'] else 'nothing'}   current -> "
             f"{st['current'] or '(none)'}   keeping {st['keep_releases']} releases"]
    if rec["busy"]:
        lines.append("an install is running in another process; nothing was recovered")
    if rec["resolved"]:
        r = rec["resolved"]
        lines.append(f"found an interrupted {r['op']} of {r['bundle']} at step {r['step']}: "
                     f"{r['decision']}")
    if rec["removed"]:
        lines.append(f"removed: {', '.join(rec['removed'])}")
    lines += [f"  {r['path']:<24} {r['status']:<8} activated {r['activated_at'] or '-'}"
              for r in st["releases"] if r["status"] in ("current", "kept")]
    lines.append("consistent: yes" if st["consistent"] else
                 "INCONSISTENT:\n  " + "\n  ".join(st["problems"]))
    emit(st, as_json, "\n".join(lines))
    if not st["consistent"]:
        raise typer.Exit(7)
