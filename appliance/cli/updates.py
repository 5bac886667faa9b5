"""`appliance update ...`: the lifecycle of imported bundles, from review to running release."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    ReadingOpt,
    UserOpt,
    emit,
    login,
    open_app,
    read_secret,
    reading_source,
    with_statement,
)
from appliance.errors import InvalidInput
from appliance.text import shown

app = typer.Typer(help="Review, approve, install and roll back updates (signed bundles).",
                  no_args_is_help=True)

RefArg = Annotated[str, typer.Argument(help="The bundle: NAME@VERSION, its id, or a digest "
                                            "prefix.")]
ReasonReq = Annotated[str, typer.Option("--reason", help="Why (recorded with the signature).")]
AckOpt = Annotated[bool, typer.Option(
    "--acknowledge-statement",
    help="Accept the electronic-signature statement for a first signature (scripts: on a "
         "terminal it is shown and asked).")]
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", help="Pin an engine profile (it must still fit this host).")]


def _edges(reading: str | None):
    from appliance.updates.install import Edges
    return Edges(source=reading_source(reading))


def _signed(ctx: typer.Context, user: str | None, password_stdin: bool, meaning: str,
            reason: str, ack: bool):
    """One password for the login and the signature, as `users review` does (11.200(a))."""
    from appliance.services.signing import SignatureRequest

    if not user:
        raise InvalidInput("this command is signed by a person", "pass --user NAME")
    password = read_secret(f"Password for {user} (signature): ", password_stdin)
    return password, SignatureRequest(meaning, reason, password, username=user,
                                      acknowledge_statement=ack)


def _activated(result) -> None:
    """A failure is an error line and exit 11, as every failing command's is."""
    from appliance.errors import InstallFailed

    if result.outcome != "activated":
        raise InstallFailed(f"{result.op} of {result.bundle} {result.outcome.replace('_', ' ')}"
                            + (f": {result.reason}" if result.reason else ""),
                            f"see `appliance update show {result.bundle}` for the checks")


@app.command("list")
def list_(ctx: typer.Context, state: Annotated[str | None, typer.Option(
        "--state", help="Only bundles in this state.")] = None,
        user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
        as_json: JsonOpt = False) -> None:
    """Bundles on this appliance by state, newest first."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        rows = updates.list_updates(appl, login(ctx, appl, user, password_stdin), state)
    empty = f"no bundles in state {state.strip().upper()}" if state else "no bundles imported"
    lines = [f"{shown(r['ref']):<28} {r['state']:<17} {shown(r['publisher']):<20} "
             f"{r['digest'][:12]}  imported by {shown(r['imported_by'])}" for r in rows
             ] or [empty]
    emit(rows, as_json, "\n".join(lines))


@app.command("check")
def check(ctx: typer.Context, ref: RefArg, user: UserOpt = None,
          password_stdin: PasswordStdinOpt = False, as_json: JsonOpt = False) -> None:
    """Run the automatic steps (verification, evaluation gates, submission for approval)."""
    from appliance.errors import UpdateRefused
    from appliance.services import updates

    with open_app(ctx) as appl:
        bundle = updates.check(appl, login(ctx, appl, user, password_stdin), ref)
    emit(bundle.summary(), as_json,
         f"{bundle.ref}: {bundle.state}" + (f" ({bundle.state_reason})"
                                            if bundle.state_reason else ""))
    if bundle.state == "REJECTED":  # a check that failed is a failing command, as `hw fit`
        raise UpdateRefused(f"{bundle.ref} is rejected"
                            + (f": {bundle.state_reason}" if bundle.state_reason else ""))


@app.command("show")
def show(ctx: typer.Context, ref: RefArg, reading: ReadingOpt = None, profile: ProfileOpt = None,
         user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
         as_json: JsonOpt = False) -> None:
    """The approval view: publisher, signers, diff, hardware profile, evidence, history.
    Opening it is recorded; approving needs it."""
    from appliance.services import updates
    from appliance.updates import view

    with open_app(ctx) as appl:
        data = updates.show(appl, login(ctx, appl, user, password_stdin), ref,
                            reading_source(reading), profile)
    emit(data, as_json, view.view_text(data))


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
        session = auth.login(appl, user, password)
        req = with_statement(appl, session, req, "update.approve", ("bundle", ref),
                             password_stdin)
        out = updates.approve(appl, session, ref, req, reading_source(reading), profile)
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
        session = auth.login(appl, user, password)
        req = with_statement(appl, session, req, "update.approve", ("bundle", ref),
                             password_stdin)
        out = updates.reject(appl, session, ref, req)
    s = out["signature"]
    emit(out, as_json, f"{out['bundle']}: REJECTED; signed by {s['name']} at {s['ts']}: "
                       f"{s['reason']}")


@app.command("install")
def install(ctx: typer.Context, ref: RefArg, reading: ReadingOpt = None, user: UserOpt = None,
            password_stdin: PasswordStdinOpt = False, as_json: JsonOpt = False) -> None:
    """Install an approved bundle; a failed health check switches back automatically."""
    from appliance.services import updates
    from appliance.updates import view

    with open_app(ctx) as appl:
        result = updates.install(appl, login(ctx, appl, user, password_stdin), ref,
                                 _edges(reading))
    emit(result.to_dict(), as_json, view.install_text(result.to_dict()))
    _activated(result)


@app.command("rollback")
def rollback(ctx: typer.Context, ref: RefArg, reason: ReasonReq, reading: ReadingOpt = None,
             user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
             acknowledge_statement: AckOpt = False, as_json: JsonOpt = False) -> None:
    """Switch back to a kept release (an admin signs it)."""
    from appliance.services import auth, updates
    from appliance.updates import view

    password, req = _signed(ctx, user, password_stdin, "approved", reason,
                            acknowledge_statement)
    with open_app(ctx) as appl:
        session = auth.login(appl, user, password)
        req = with_statement(appl, session, req, "update.rollback", ("bundle", ref),
                             password_stdin)
        result = updates.rollback(appl, session, ref, req, _edges(reading))
    emit(result.to_dict(), as_json, view.install_text(result.to_dict()))
    _activated(result)


@app.command("status")
def status(ctx: typer.Context, deep: Annotated[bool, typer.Option(
        "--deep", help="Also re-hash the current and kept releases against the signed "
                       "digests.")] = False,
        user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
        as_json: JsonOpt = False) -> None:
    """What runs now; finds and completes or undoes an interrupted install."""
    from appliance.services import updates

    with open_app(ctx) as appl:
        st = updates.status(appl, login(ctx, appl, user, password_stdin), deep=deep)
    rec = st["recovery"]
    lines = [f"active: {st['active']['ref'] if st['active'] else 'nothing'}   current -> "
             f"{st['current'] or '(none)'}   keeping {st['keep_releases']} releases"]
    if rec["busy"]:
        lines.append("an install, rollback or backup is running in another process; "
                     "nothing was recovered")
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
        from appliance.errors import IntegrityError

        more = len(st["problems"]) - 1
        raise IntegrityError(f"the releases are inconsistent: {st['problems'][0]}"
                             + (f" (and {more} more)" if more else ""),
                             "report it to the security officer; the status lists every "
                             "problem")
