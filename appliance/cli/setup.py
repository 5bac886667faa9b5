"""Creating an appliance, the demo appliance, and opening the console."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    ReadingOpt,
    emit,
    read_secret,
    reading_source,
    state,
)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("tui")(tui)
    demo_app = typer.Typer(help="The self-contained demo appliance.", no_args_is_help=True)
    demo_app.command("setup")(demo_setup)
    app.add_typer(demo_app, name="demo")


def init(
    ctx: typer.Context,
    admin: Annotated[str, typer.Option("--admin", help="Username of the first administrator.")],
    full_name: Annotated[str, typer.Option("--full-name", help="Printed name of that person.")],
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the appliance home, database, signing key and first admin account."""
    from appliance.errors import InvalidInput
    from appliance.home import HomeLayout
    from appliance.services.setup import check_home, init_appliance

    check_home(HomeLayout(state(ctx).home))  # refused before any password is asked for
    password = read_secret(f"New password for {admin}: ", password_stdin)
    if not password_stdin:
        if read_secret("Repeat the password: ", False) != password:
            raise InvalidInput("the passwords differ", "type the same password twice")
    app = init_appliance(state(ctx).home, admin, full_name, password)
    data = {"home": str(app.layout.root), "appliance_id": app.appliance_id,
            "signing_key_id": app.key.key_id, "admin": admin.lower()}
    app.close()
    emit(data, as_json,
         f"Appliance {data['appliance_id']} created at {data['home']}\n"
         f"Signing key fingerprint: {data['signing_key_id']}\n"
         f"First administrator: {data['admin']} (roles admin, security: separate them soon)")


def tui(ctx: typer.Context) -> None:
    """Open the admin console."""
    from tui.app import run_console

    run_console(state(ctx).home)


def demo_setup(ctx: typer.Context, reading: ReadingOpt = None,
               as_json: JsonOpt = False) -> None:
    """Create the demo appliance (once) with demo users and history; prints the logins."""
    from appliance.demo import DEMO_USERS, ensure_demo
    created = ensure_demo(state(ctx).home, reading_source(reading))
    logins = [{"username": u.username, "password": u.password, "roles": list(u.roles)}
              for u in DEMO_USERS]
    lines = ["Demo appliance " + ("created" if created else "already present")
             + f" at {state(ctx).home}", "Demo logins (username / password):"]
    lines += [f"  {u['username']:<8} {u['password']}  ({', '.join(u['roles'])})" for u in logins]
    emit({"home": str(state(ctx).home), "created": created, "logins": logins}, as_json,
         "\n".join(lines))
