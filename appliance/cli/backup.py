"""`appliance backup ...`: back up the records, verify a backup, restore one (11.10(c))."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    UserOpt,
    credentials,
    emit,
    login,
    open_app,
    state,
)

app = typer.Typer(help="Backups of the appliance (records, keys, settings, content store), "
                       "verified by the audit chain.",
                  no_args_is_help=True)

Dir = Annotated[Path, typer.Argument(help="The backup directory.")]
ExpectOpt = Annotated[str | None, typer.Option(
    "--expect-fingerprint",
    help="The appliance key's fingerprint (printed at `appliance init`); refuse a backup "
         "signed by any other key.")]


@app.command("create")
def create(ctx: typer.Context,
           to: Annotated[Path, typer.Option("--to", help="New directory on backup media.")],
           user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
           as_json: JsonOpt = False) -> None:
    """Copy the database (online, consistent), keys, settings and the content store's
    objects, with an anchor."""
    from appliance.services.backup import create_backup

    with open_app(ctx) as appl:
        result = create_backup(appl, login(ctx, appl, user, password_stdin), to)
    emit({"path": str(result.path), "events": result.events, "head_hash": result.head_hash,
          "key_fingerprint": result.key_fingerprint, "store_objects": result.objects,
          "store_bytes": result.object_bytes},
         as_json, f"Backup of {result.events} events and {result.objects} content-store "
                  f"objects ({result.object_bytes / (1 << 20):.1f} MiB) written to {result.path} "
                  f"(head {result.head_hash[:16]}), signed by appliance key "
                  f"{result.key_fingerprint}. It holds the signing key: keep it safe.")


def _report(report, as_json: bool, expected: bool) -> None:
    from appliance.errors import IntegrityError

    trail = report.trail
    compared = ("the expected one" if expected else
                "compare it with the one printed at `appliance init`, or pass "
                "--expect-fingerprint")
    emit(report.to_dict(), as_json,
         f"{'OK' if report.ok else 'FAILED'}: {trail.events_checked} events, head "
         f"{trail.head_hash[:16]}; {len(report.files)} files match the manifest signed by "
         f"appliance key {report.key_fingerprint} ({compared})"
         + "".join(f"\n  {f.kind}{'' if f.seq is None else f' at {f.seq}'}: {f.message}"
                   for f in trail.findings)
         + "".join(f"\n  release {r} laid out again from the backup"
                   f"{' (current)' if r == report.current else ''}" for r in report.releases))
    if not report.ok:
        raise IntegrityError(f"backup does not verify: {trail.first_finding.kind}")


@app.command("verify")
def verify(backup: Dir, expect_fingerprint: ExpectOpt = None, as_json: JsonOpt = False
           ) -> None:
    """Verify a backup's signed manifest and whole chain (needs no appliance)."""
    from appliance.services.backup import verify_backup

    _report(verify_backup(backup, expect_fingerprint), as_json, expect_fingerprint is not None)


@app.command("restore")
def restore(ctx: typer.Context, backup: Dir, expect_fingerprint: ExpectOpt = None,
            user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
            as_json: JsonOpt = False) -> None:
    """Restore a verified backup into --home, which must be new or empty, and lay out its
    releases again from its content store. --user logs in with an account the backup holds
    (IT or security)."""
    from appliance.services.backup import check_restore_target, restore_backup

    check_restore_target(state(ctx).home)  # refused before any password is asked for
    username, password = credentials(user, password_stdin)
    _report(restore_backup(backup, state(ctx).home, username, password, expect_fingerprint),
            as_json, expect_fingerprint is not None)
