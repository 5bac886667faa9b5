"""`appliance backup ...`: back up the records, verify a backup, restore one (11.10(c))."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import JsonOpt, PasswordStdinOpt, UserOpt, emit, login, open_app, state

app = typer.Typer(help="Backups of the appliance's records, verified by the audit chain.",
                  no_args_is_help=True)

Dir = Annotated[Path, typer.Argument(help="The backup directory.")]


@app.command("create")
def create(ctx: typer.Context,
           to: Annotated[Path, typer.Option("--to", help="New directory on backup media.")],
           user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
           as_json: JsonOpt = False) -> None:
    """Copy the database (online, consistent), keys and settings, with an anchor."""
    from appliance.services.backup import create_backup

    with open_app(ctx) as appl:
        result = create_backup(appl, login(ctx, appl, user, password_stdin), to)
    emit({"path": str(result.path), "events": result.events, "head_hash": result.head_hash},
         as_json, f"Backup of {result.events} events written to {result.path} "
                  f"(head {result.head_hash[:16]}). It holds the signing key: keep it safe.")


def _report(report, as_json: bool) -> None:
    from appliance.errors import IntegrityError

    emit(report.to_dict(), as_json,
         f"{'OK' if report.ok else 'FAILED'}: {report.events_checked} events, head "
         f"{report.head_hash[:16]}" + "".join(f"\n  {f.kind} at {f.seq}: {f.message}"
                                              for f in report.findings))
    if not report.ok:
        raise IntegrityError(f"backup does not verify: {report.findings[0].kind}")


@app.command("verify")
def verify(backup: Dir, as_json: JsonOpt = False) -> None:
    """Verify a backup's whole chain against its anchor (needs no appliance)."""
    from appliance.services.backup import verify_backup

    _report(verify_backup(backup), as_json)


@app.command("restore")
def restore(ctx: typer.Context, backup: Dir, as_json: JsonOpt = False) -> None:
    """Restore a verified backup into --home, which must not hold an appliance."""
    from appliance.services.backup import restore_backup

    _report(restore_backup(backup, state(ctx).home), as_json)
