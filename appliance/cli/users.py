"""`appliance users ...`: accounts, roles, training, passwords and access reviews."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    UserOpt,
    emit,
    login,
    open_app,
    read_secret,
    with_statement,
)
from appliance.errors import InvalidInput
from appliance.text import shown

app = typer.Typer(help="User accounts, roles and electronic-signature readiness.",
                  no_args_is_help=True)

ReasonReq = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]
AckOpt = Annotated[bool, typer.Option(
    "--acknowledge-statement",
    help="Accept the electronic-signature statement for a first signature (scripts: on a "
         "terminal it is shown and asked).")]


def _user_dict(u) -> dict:
    return u.public()


@app.command("roles")
def roles(as_json: JsonOpt = False) -> None:
    """Print the permission table: which role may do what."""
    from appliance.identity.roles import ROLES, TRAINING_REQUIRED, table

    data = {"roles": ROLES, "permissions": table(),
            "training_required": sorted(TRAINING_REQUIRED)}
    lines = [f"{r:<9} {d}" for r, d in ROLES.items()]
    lines += ["", f"{'permission':<20} roles"]
    lines += [f"{p['permission']:<20} {', '.join(p['roles'])}" for p in data["permissions"]]
    lines += ["", "training must be recorded before granting: "
              + ", ".join(sorted(TRAINING_REQUIRED))]
    emit(data, as_json, "\n".join(lines))


@app.command("list")
def list_(ctx: typer.Context, user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
          as_json: JsonOpt = False) -> None:
    """List every account (disabled ones too: usernames are never reused)."""
    from appliance.services import users

    with open_app(ctx) as appl:
        accounts = users.users(appl, login(ctx, appl, user, password_stdin))
        warnings = users.role_conflicts(appl)
    data = {"users": [_user_dict(u) for u in accounts], "warnings": warnings}
    lines = [f"{u.username:<12} {shown(u.full_name):<24} {','.join(u.roles):<18} {u.status}"
             + ("  (must change password)" if u.must_change_password else "")
             for u in accounts]
    lines += [f"warning: {w}" for w in warnings]
    emit(data, as_json, "\n".join(lines))


@app.command("add")
def add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="New username (never reused).")],
    full_name: Annotated[str, typer.Option("--full-name", help="Printed name.")],
    role: Annotated[list[str], typer.Option("--role", help="Role (repeat for several).")],
    reason: ReasonReq,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an account with a temporary password that must be changed at first login."""
    from appliance.identity.policy import temporary_password
    from appliance.services import users

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        temp = temporary_password(username.strip().lower(), appl.settings.password)
        created = users.add_user(appl, session, username, full_name, role, temp, reason)
    emit({"user": _user_dict(created), "temporary_password": temp}, as_json,
         f"Created {created.username} ({', '.join(created.roles)}). Temporary password: {temp}\n"
         "Hand it over in person; it must be changed at first login and cannot sign.")


def _simple(action: str):
    def command(
        ctx: typer.Context,
        username: Annotated[str, typer.Argument(help="The account.")],
        reason: ReasonReq,
        user: UserOpt = None,
        password_stdin: PasswordStdinOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        from appliance.services import users

        with open_app(ctx) as appl:
            session = login(ctx, appl, user, password_stdin)
            if action == "reset-password":
                temp = users.reset_password(appl, session, username, reason)
                emit({"username": temp.username, "temporary_password": temp.password}, as_json,
                     f"Temporary password for {temp.username}: {temp.password} "
                     "(must be changed at login; cannot sign until then)")
                return
            if action == "unlock":
                name = users.unlock(appl, session, username, reason)
                emit({"username": name, "unlocked": True}, as_json, f"{shown(name)} unlocked")
                return
            fn = {"disable": users.disable_user, "enable": users.enable_user}[action]
            result = fn(appl, session, username, reason)
        emit(_user_dict(result), as_json, f"{result.username}: {result.status}")

    command.__doc__ = {
        "disable": "Disable an account (never deleted; the username is never reused).",
        "enable": "Enable a disabled account.",
        "reset-password": "Give a temporary password (lost password); it must be changed.",
        "unlock": "Clear a lockout after failed logins.",
    }[action]
    return command


for _action in ("disable", "enable", "reset-password", "unlock"):
    app.command(_action)(_simple(_action))


def _role_change(grant: bool):
    def command(
        ctx: typer.Context,
        username: Annotated[str, typer.Argument(help="The account.")],
        role: Annotated[str, typer.Option("--role", help="The role.")],
        reason: ReasonReq,
        user: UserOpt = None,
        password_stdin: PasswordStdinOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        from appliance.services import users

        with open_app(ctx) as appl:
            session = login(ctx, appl, user, password_stdin)
            fn = users.grant_role if grant else users.revoke_role
            result = fn(appl, session, username, role, reason)
        emit(_user_dict(result), as_json, f"{result.username}: {', '.join(result.roles)}")

    command.__doc__ = "Grant a role." if grant else "Revoke a role."
    return command


app.command("grant")(_role_change(True))
app.command("revoke")(_role_change(False))


@app.command("train")
def train(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The person trained.")],
    role: Annotated[str, typer.Option("--role", help="The role they were trained for.")],
    reason: ReasonReq,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Record that a person was trained for a role (admins; needed before granting admin)."""
    from appliance.services import users

    with open_app(ctx) as appl:
        users.record_training(appl, login(ctx, appl, user, password_stdin), username, role,
                              reason)
    emit({"username": username, "role": role, "trained": True}, as_json,
         f"Training of {username} for {role} recorded")


@app.command("passwd")
def passwd(ctx: typer.Context, user: UserOpt = None, password_stdin: PasswordStdinOpt = False,
           as_json: JsonOpt = False) -> None:
    """Change your own password (with --password-stdin: current, then new, one per line)."""
    from appliance.services import auth, users

    if not user:
        raise InvalidInput("whose password?", "pass --user NAME")
    old = read_secret("Current password: ", password_stdin)
    new = read_secret("New password: ", password_stdin)
    if not password_stdin and read_secret("Repeat the new password: ", False) != new:
        raise InvalidInput("the new passwords differ", "type the same password twice")
    with open_app(ctx) as appl:
        session = auth.login(appl, user, old)
        users.change_password(appl, session, old, new)
    emit({"username": user, "changed": True}, as_json, "Password changed")


@app.command("review")
def review(
    ctx: typer.Context,
    reason: ReasonReq,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    acknowledge_statement: AckOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign a periodic access review of all accounts (security officers)."""
    from appliance.services import auth, users
    from appliance.services.signing import SignatureRequest

    if not user:
        raise InvalidInput("this command is signed by a person", "pass --user NAME")
    password = read_secret(f"Password for {user} (signature): ", password_stdin)
    with open_app(ctx) as appl:
        session = auth.login(appl, user, password)
        req = with_statement(appl, session, SignatureRequest(
            "reviewed", reason, password, username=user,
            acknowledge_statement=acknowledge_statement), "users.review",
            ("access_review", "users"), password_stdin)
        sig = users.review_access(appl, session, req)
    emit(sig.to_dict(), as_json, f"Access review signed: {sig.line()}")
