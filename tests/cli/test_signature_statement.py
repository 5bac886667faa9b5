"""A first electronic signature typed on a terminal: the CLI shows the signature statement
and asks for its acceptance (11.10(j)), instead of refusing, password spent, anyone who did
not know to pass --acknowledge-statement. Real subprocesses on a real pseudo-terminal."""

from __future__ import annotations

import os
import select
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.cli.test_cli_foundation import APPLIANCE, cli_home  # noqa: F401 - a fixture
from tests.conftest import PASSWORD

QUESTION = "Do you accept this statement for your signatures?"


def on_terminal(home: Path, args: list[str], answers: list[tuple[str, str]]
                ) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its terminal; type each answer once its prompt
    has appeared. Returns the exit status and all it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*APPLIANCE, *args], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(os.environ, APPLIANCE_HOME=str(home), COLUMNS="200"),
                            start_new_session=True)
    os.close(slave)
    out, seen, deadline = b"", 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the command has ended and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                while answers and answers[0][0].encode() in out[seen:]:
                    seen = out.index(answers[0][0].encode(), seen) + len(answers[0][0])
                    os.write(master, answers.pop(0)[1].encode() + b"\n")
            elif proc.poll() is not None:
                break
        proc.wait(30)
    finally:
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


def _reviews(home: Path) -> int:
    conn = sqlite3.connect(home / "appliance.db")
    try:
        return conn.execute("SELECT count(*) FROM audit_events WHERE json_extract(body, "
                            "'$.action') = 'user.access_review'").fetchone()[0]
    finally:
        conn.close()


def test_a_first_signature_on_a_terminal_asks_for_the_statement(cli_home: Path) -> None:  # noqa: F811
    args = ["users", "review", "--reason", "quarterly review", "--user", "alice"]
    code, out = on_terminal(cli_home, args, [("(signature): ", PASSWORD), (QUESTION, "n")])
    assert code != 0 and "electronic signature on this appliance is the legally binding" in out
    assert "error: the signature statement was not accepted (nothing was signed)" in out
    assert _reviews(cli_home) == 0

    code, out = on_terminal(cli_home, args, [("(signature): ", PASSWORD), (QUESTION, "y")])
    assert code == 0, out
    assert "Access review signed" in out and _reviews(cli_home) == 1

    # The statement is accepted once: the next signature asks for the password only.
    code, out = on_terminal(cli_home, args, [("(signature): ", PASSWORD)])
    assert code == 0, out
    assert QUESTION not in out and _reviews(cli_home) == 2
