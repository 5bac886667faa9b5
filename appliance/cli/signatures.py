"""`appliance signatures ...`: electronic signatures with their manifestation (11.50)."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import JsonOpt, PasswordStdinOpt, UserOpt, emit, login, open_app
from appliance.text import shown

app = typer.Typer(help="Electronic signatures: who signed what, when, and meaning.",
                  no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context,
          record_type: Annotated[str | None, typer.Option("--record-type")] = None,
          record_id: Annotated[str | None, typer.Option("--record-id")] = None,
          user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
          as_json: JsonOpt = False) -> None:
    """List signatures, newest first."""
    from appliance.services.signatures import list_signatures

    with open_app(ctx) as appl:
        sigs = list_signatures(appl, login(ctx, appl, user, password_stdin), record_type,
                               record_id)
    emit([s.to_dict() for s in sigs], as_json,
         # the whole id: it is what `signatures show` takes
         "\n".join(shown(f"{s.id}  {s.record_type}/{s.record_id}  {s.line()}")
                   for s in sigs)
         or "no signatures")


@app.command("show")
def show(ctx: typer.Context, sig_id: Annotated[str, typer.Argument(help="Signature id.")],
         user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
         as_json: JsonOpt = False) -> None:
    """Show one signature: printed name, date and time, meaning, reason, signed digest."""
    from appliance.services.signatures import show_signature

    with open_app(ctx) as appl:
        s = show_signature(appl, login(ctx, appl, user, password_stdin), sig_id)
    emit(s.to_dict(), as_json,
         f"Signed by:   {shown(s.full_name)} ({s.username})\nDate/time:   {s.ts} (UTC)\n"
         f"Meaning:     {s.meaning}\nReason:      {shown(s.reason)}\n"
         f"Record:      {s.record_type}/{s.record_id}\nRecord hash: {s.record_digest}\n"
         f"Audit event: {s.audit_seq}")
