"""Entry point: `appliance [--home DIR] COMMAND ...`. Expected errors print one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from appliance.cli import audit, backup, hardware, setup, signatures, users
from appliance.cli import bundle as bundle_cli
from appliance.cli import media as media_cli
from appliance.cli import provision as provision_cli
from appliance.cli import trust as trust_cli
from appliance.cli import updates as updates_cli
from appliance.cli.common import CliState, is_utf8
from appliance.errors import ApplianceError, InvalidInput
from appliance.home import default_home

app = typer.Typer(
    help="Sovereign clinical-AI appliance: signed updates, Part 11 audit trail, provisioning.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(audit.app, name="audit")
app.add_typer(backup.app, name="backup")
app.add_typer(hardware.app, name="hw")
app.add_typer(users.app, name="users")
app.add_typer(signatures.app, name="signatures")
app.add_typer(trust_cli.app, name="trust")
app.add_typer(bundle_cli.app, name="bundle")
app.add_typer(updates_cli.app, name="update")
app.add_typer(media_cli.app, name="media")
app.add_typer(provision_cli.app, name="provision")
setup.register(app)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[str | None, typer.Option(
        "--home", envvar="APPLIANCE_HOME", metavar="<path>",
        help="Appliance home (default /var/lib/appliance for root, else the user data dir).")
    ] = None,
) -> None:
    if home is not None and not home.strip():  # as a Path, "" is ".": the current directory
        raise InvalidInput("--home is empty", "name the appliance home's directory, or leave "
                           "--home out for the default")
    # Absolute, so what is printed (created at, no appliance at) names the directory meant.
    ctx.obj = CliState(home=(Path(home) if home else default_home()).absolute())


def main(argv: list[str] | None = None) -> None:
    # Nothing the appliance writes (settings, store, releases, exports, anchors, readings)
    # may be group- or world-writable, whatever umask the operator's shell has.
    os.umask(os.umask(0o022) | 0o022)
    command = typer.main.get_command(app)
    for n, arg in enumerate(sys.argv[1:] if argv is None else argv, start=1):
        if not is_utf8(arg):  # else a traceback wherever it meets SQLite or the trail
            print(f"error: argument {n} is not UTF-8 text: {ascii(arg)} (type it in a UTF-8 "
                  "terminal, or rename the file; nothing was changed)", file=sys.stderr)
            sys.exit(InvalidInput.exit_code)
    try:
        command.main(args=argv, prog_name="appliance", standalone_mode=False)
    except ApplianceError as exc:
        print(f"error: {exc.message} ({exc.hint})", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted (nothing was changed)", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer's own vendored click
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "appliance"
        print(f"error: {exc.format_message()} (see `{where} --help`)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted (nothing half-done was kept)", file=sys.stderr)
        sys.exit(130)
