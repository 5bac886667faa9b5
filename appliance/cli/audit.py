"""`appliance audit ...`: verify, anchor, list and export the trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    UserOpt,
    emit,
    err_console,
    login,
    open_app,
    out_path,
)
from appliance.text import shown

app = typer.Typer(help="The Part 11 audit trail.", no_args_is_help=True)


@app.command("verify")
def verify(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    anchor: Annotated[Path | None, typer.Option(
        "--anchor", help="An anchor file from external media (catches truncation, rollback).")
    ] = None,
    incremental: Annotated[bool, typer.Option(
        "--incremental", help="Verify only from the newest valid checkpoint on.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the whole chain and every checkpoint; exit 7 on any tampering."""
    from appliance.errors import IntegrityError
    from appliance.services import audit

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        report = audit.verify(appl, session, anchor, incremental)
    lines = [f"{'OK' if report.ok else 'FAILED'}: {report.events_checked} events checked "
             f"({report.mode}), {report.checkpoints_checked} checkpoints, "
             f"head {report.head_seq} {report.head_hash[:16]}"]
    lines += [f"  {f.kind}{'' if f.seq is None else f' at {f.seq}'}: {f.message}"
              for f in report.findings]
    lines += [f"  warning: {w.message}" for w in report.warnings]
    emit(report.to_dict(), as_json, "\n".join(lines))
    if not report.ok:
        seq, first = report.first_bad_seq, report.first_finding
        raise IntegrityError("audit trail verification failed: "
                             f"{first.kind}{'' if seq is None else f' at {seq}'}")


@app.command("anchor")
def anchor(
    ctx: typer.Context,
    to: Annotated[str, typer.Option(
        "--to", metavar="<path>", help="New file, or a directory to name one in, on external "
                                       "media (never overwrites).")],
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the newest signed checkpoint to external media for off-box custody."""
    from appliance.services import audit

    where = out_path("--to", to)
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        path = audit.anchor(appl, session, where)
    emit({"anchor": str(path)}, as_json, f"Anchor written to {path}")


SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="From this UTC time on (ISO 8601, e.g. 2026-01-15 or 2026-01-15T09:00Z).")]
UntilOpt = Annotated[str | None, typer.Option(
    "--until", help="Before this UTC time (ISO 8601; exclusive).")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Only this username.")]
ActionOpt = Annotated[str | None, typer.Option(
    "--action", help="Only this action, or a prefix ending in '*' (e.g. 'update.*').")]
TargetTypeOpt = Annotated[str | None, typer.Option("--target-type", help="Only this target type.")]
TargetIdOpt = Annotated[str | None, typer.Option("--target-id", help="Only this target id.")]


def _when(option: str, text: str | None) -> str | None:
    """An ISO 8601 time from the command line, as the trail stores it (UTC, ms, Z)."""
    from datetime import UTC, datetime

    from appliance.clock import format_ts
    from appliance.errors import InvalidInput

    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{option} {text!r} is not an ISO 8601 date or time",
                           "e.g. 2026-01-15 or 2026-01-15T09:30:00Z") from None
    try:
        return format_ts(t if t.tzinfo else t.replace(tzinfo=UTC))
    except OverflowError:  # an offset that moves 0001-01-01 or 9999-12-31 off the calendar
        raise InvalidInput(f"{option} {text!r} lies outside the years 1 to 9999 in UTC",
                           "give a time within them") from None


def _filter(since, until, actor, action, target_type, target_id):
    from appliance.audit.query import EventFilter

    return EventFilter(since=_when("--since", since), until=_when("--until", until),
                       actor=actor or None, action=action or None,
                       target_type=target_type or None, target_id=target_id or None)


@app.command("events")
def events(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    actor: ActorOpt = None,
    action: ActionOpt = None,
    target_type: TargetTypeOpt = None,
    target_id: TargetIdOpt = None,
    after: Annotated[int, typer.Option("--after", min=0, max=2**63 - 1,  # SQLite's integers
                                       help="Only events after this seq.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000,
                                       help="At most this many events.")] = 100,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List audit events matching the filters (every field with --json)."""
    from appliance.services import audit

    flt = _filter(since, until, actor, action, target_type, target_id)
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        rows = [e.flat() for e in audit.events(appl, session, flt, after, limit, newest)]
    lines = []
    for r in rows:
        target = f"{r['target_type']}:{r['target_id']}" if r["target_type"] else ""
        line = (f"{r['seq']:>7} {r['ts']} {r['actor_name']} ({r['actor']}, {r['actor_role']}) "
                f"{r['action']} {target} {r['outcome']}")
        if r["reason"]:
            line += f" reason: {r['reason']}"
        lines.append(shown(line))  # a stored newline or escape must not forge a line
        if r["signature"]:
            lines.append(shown(f"        signed: {r['signature']}"))
    emit(rows, as_json, "\n".join(lines) or "no events match")


@app.command("export")
def export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or pdf.")],
    out: Annotated[str, typer.Option(
        "--out", metavar="<path>",
        help="File to write, or a directory to name one in (never overwrites).")],
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    actor: ActorOpt = None,
    action: ActionOpt = None,
    target_type: TargetTypeOpt = None,
    target_id: TargetIdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the trail with a manifest signed by the appliance key (an audit event itself)."""
    import sys

    from appliance.services.audit_export import export_trail

    flt = _filter(since, until, actor, action, target_type, target_id)
    where = out_path("--out", out)
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        if as_json or not sys.stderr.isatty():
            result = export_trail(appl, session, fmt, where, flt)
        else:
            from rich.progress import Progress

            with Progress(console=err_console, transient=True) as bar:
                task = bar.add_task("exporting", total=None)
                result = export_trail(appl, session, fmt, where, flt, lambda done, total:
                                      bar.update(task, completed=done, total=total))
        key_id = appl.key.key_id
    # The key pins who signed; only an anchor kept off the appliance pins the history.
    emit({"path": str(result.path), "manifest": str(result.manifest_path),
          "count": result.count, "sha256": result.sha256, "head_hash": result.head_hash,
          "key_id": key_id},
         as_json,
         f"Exported {result.count} events to {result.path}\n"
         f"  sha256   {result.sha256}\n  manifest {result.manifest_path}\n"
         f"  check it with: verify-audit-export {result.path} --key {key_id} "
         "--anchor <an anchor kept off the appliance, taken before this export>")
