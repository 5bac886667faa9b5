"""What every command shares: the home, authentication, and output as text or JSON."""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from appliance.errors import InvalidInput
from appliance.text import shown

if TYPE_CHECKING:
    from appliance.hardware import RecordedSource

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UserOpt = Annotated[str | None, typer.Option("--user", "-u", help="Username to act as.")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from standard input (scripts, tests).")]
ReasonOpt = Annotated[str | None, typer.Option(
    "--reason", help="Why (recorded in the audit trail).")]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


@dataclass
class CliState:
    home: Path


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().obj


def open_app(ctx: typer.Context):
    from appliance.context import Appliance
    return Appliance.open(state(ctx).home)


def is_utf8(text: str) -> bool:
    """False for text decoded with surrogate escapes (bytes that are not UTF-8, from a
    terminal or file in another encoding): SQLite, the audit trail and scrypt refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def out_path(option: str, text: str) -> Path:
    """A path typed for something to write. Empty text is refused: as a Path it is ".",
    so an unset shell variable put the anchor or export in the current directory, not on
    the media. A trailing "/" names a directory, which must exist: else a file of that
    name was written. (Typer's Path drops both signs, so such options are typed as text.)"""
    if not text.strip():
        raise InvalidInput(f"{option} is empty", f"name where to write with {option}")
    if text.endswith("/") and not Path(text).is_dir():
        raise InvalidInput(f"directory {text} does not exist",
                           f"mount the media or create it, or pass {option} a file name")
    return Path(text)


ReadingOpt = Annotated[str | None, typer.Option(
    "--reading", envvar="APPLIANCE_GPU_READING",
    help="Replay a GPU reading (from `hw record`) instead of asking NVML; recorded as such.")]


def reading_source(text: str | None) -> RecordedSource | None:
    """The replayed GPU reading `--reading` names (a `RecordedSource`), or None: ask NVML.
    Empty text is refused: as a Path it is ".", which was reported as a reading that is a
    directory. (Typed as text for that reason, as `out_path`'s options are.)"""
    if text is None:
        return None
    if not text.strip():
        raise InvalidInput("--reading is empty", "pass a file written by `appliance hw "
                           "record`, or leave --reading out to ask NVML")
    from appliance.hardware import RecordedSource
    return RecordedSource(Path(text))


def read_secret(prompt: str, from_stdin: bool) -> str:
    """A password from stdin (one line) or the terminal, never from an argument."""
    not_utf8 = InvalidInput("the password is not UTF-8 text",
                            "type it in a UTF-8 terminal, or pipe it UTF-8 encoded")
    if from_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise not_utf8 from None
        if not line:
            raise InvalidInput("no password on standard input", "pipe the password, one line")
        secret = line.rstrip("\n")
    elif not sys.stdin.isatty():
        raise InvalidInput("no terminal to ask for a password", "use --password-stdin")
    else:
        try:
            secret = getpass.getpass(prompt)
        except UnicodeDecodeError:
            raise not_utf8 from None
    if not is_utf8(secret):
        raise not_utf8
    return secret


def with_statement(appl, session, req, permission: str, target: tuple[str, str],
                   password_stdin: bool):
    """On a terminal, a person's first signature shows the signature statement and asks
    them to accept it (11.10(j)), where before it was refused, password spent, unless they
    knew to pass --acknowledge-statement; scripts still pass it. Declining signs nothing."""
    from dataclasses import replace

    from appliance.services import signing

    if req.acknowledge_statement or password_stdin or not sys.stdin.isatty():
        return req
    asked = signing.prompt(appl, session, permission, target_type=target[0],
                           target_id=target[1])
    if not asked.statement:
        return req
    console.print(f"Your first electronic signature. {asked.statement_text}")
    if not typer.confirm("Do you accept this statement for your signatures?"):
        raise InvalidInput("the signature statement was not accepted", "nothing was signed")
    return replace(req, acknowledge_statement=True)


def credentials(user: str | None, password_stdin: bool) -> tuple[str, str]:
    """The acting person's username and password (`--user`, then the password asked)."""
    if not user:
        raise InvalidInput("this command acts on behalf of a person", "pass --user NAME")
    return user, read_secret(f"Password for {user}: ", password_stdin)


def login(ctx: typer.Context, app, user: str | None, password_stdin: bool):
    from appliance.services import auth
    return auth.login(app, *credentials(user, password_stdin))


def emit(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif text is not None:
        # Not markup: names, reasons and bundle metadata come from people and media, and a
        # "[/]" in one would stop the print. Nor raw control characters: whatever a listing
        # forgot to pass through `shown`, no escape sequence reaches the terminal.
        console.print(shown(text, keep_newlines=True), markup=False)
    else:
        console.print(data, markup=False)
