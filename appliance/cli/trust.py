"""`appliance trust ...`: take the first trusted root, and show the trust store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    UserOpt,
    console,
    emit,
    login,
    open_app,
    read_secret,
    with_statement,
)
from appliance.errors import InvalidInput

app = typer.Typer(help="The trust store: which publishers' keys this appliance trusts.",
                  no_args_is_help=True)


def _show_text(d: dict) -> str:
    lines = [f"Root version {d['root_version']}, fingerprint {d['root_fingerprint']}", "",
             f"{'role':<16}{'threshold':>10}  {'keys':>4}  {'version':>7}  expires"]
    for r in d["roles"]:
        expired = " (EXPIRED)" if r["expired"] else ""
        lines.append(f"{r['role']:<16}{r['threshold']:>10}  {len(r['keyids']):>4}  "
                     f"{r['version'] if r['version'] is not None else '-':>7}  "
                     f"{r['expires'] or '-'}{expired}")
    lines += ["", "Who may publish what:"]
    for p in d["publishers"]:
        lines.append(f"  {p['role']:<16} {', '.join(p['kinds'])}  (paths {', '.join(p['paths'])})")
    lines += ["", "Keys:"]
    for k in d["keys"]:
        lines.append(f"  {k['keyid'][:16]}  {k['scheme']:<22} {', '.join(k['roles'])}")
    return "\n".join(lines)


@app.command("init")
def init(
    ctx: typer.Context,
    root: Annotated[Path, typer.Option("--root", help="root.json from the installer media.")],
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    expect_fingerprint: Annotated[str | None, typer.Option(
        "--expect-fingerprint",
        help="The fingerprint printed on paper (required when not on a terminal).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] =
        "initial trust from installer media",
    acknowledge_statement: Annotated[bool, typer.Option(
        "--acknowledge-statement",
        help="Accept the electronic-signature statement for a first signature (scripts: on "
             "a terminal it is shown and asked).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Trust a first root (security officer, signed); prints its fingerprint to compare."""
    from appliance.bundle.trust import fingerprint, read_root_file
    from appliance.services import auth
    from appliance.services import trust as trust_service
    from appliance.services.signing import SignatureRequest

    if not user:
        raise InvalidInput("this command is signed by a person", "pass --user NAME")
    data = read_root_file(root)
    fp = fingerprint(data)
    if expect_fingerprint is None:
        if password_stdin or not sys.stdin.isatty():
            raise InvalidInput("no terminal to confirm the root fingerprint",
                               "pass --expect-fingerprint with the one printed on paper")
        console.print(f"Root fingerprint: [bold]{fp}[/bold]")
        if not typer.confirm("Does it match the fingerprint printed on paper?"):
            raise InvalidInput("fingerprint not confirmed", "nothing was trusted")
        expect_fingerprint = fp
    password = read_secret(f"Password for {user} (signature): ", password_stdin)
    with open_app(ctx) as appl:
        session = auth.login(appl, user, password)
        req = with_statement(appl, session, SignatureRequest(
            "approved", reason, password, username=user,
            acknowledge_statement=acknowledge_statement), "trust.manage", ("trust", "root"),
            password_stdin)
        out = trust_service.init_trust(appl, session, data, req, source=str(root),
                                       expect_fingerprint=expect_fingerprint)
    emit(out, as_json, f"Trusted root v{out['root_version']}\nFingerprint: {fp}\n\n"
         + _show_text(out))


@app.command("show")
def show(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roles, keys, thresholds, expiry and who may publish which component kinds."""
    from appliance.services import trust as trust_service

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        out = trust_service.show_trust(appl, session)
    emit(out, as_json, _show_text(out))
