"""`appliance audit ...`: verify, anchor, list and export the trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import JsonOpt, PasswordStdinOpt, UserOpt, emit, login, open_app

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
    lines += [f"  {f.kind} at {f.seq}: {f.message}" for f in report.findings]
    lines += [f"  warning: {w.message}" for w in report.warnings]
    emit(report.to_dict(), as_json, "\n".join(lines))
    if not report.ok:
        first = report.findings[0]
        raise IntegrityError(f"audit trail verification failed: {first.kind} at "
                             f"{report.first_bad_seq}")


@app.command("anchor")
def anchor(
    ctx: typer.Context,
    to: Annotated[Path, typer.Option("--to", help="File or directory on external media.")],
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the newest signed checkpoint to external media for off-box custody."""
    from appliance.services import audit

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        path = audit.anchor(appl, session, to)
    emit({"anchor": str(path)}, as_json, f"Anchor written to {path}")
