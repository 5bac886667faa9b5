"""Two `appliance init`s into one home at once: one makes the appliance, the other is
refused in one line and touches nothing (it used to pass the empty-home check too, then
fail on the key the first had written and remove the first one's appliance as its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli_foundation import run
from tests.conftest import PASSWORD

# The first init stops just before it makes the signing key (the empty-home check passed),
# says so through one FIFO and goes on when the test writes to the other.
_PAUSED_INIT = """
import sys
from pathlib import Path
import appliance.services.setup as setup
ready, go, home = sys.argv[1:4]
real = setup.SigningKey.generate
def paused():
    open(ready, "w").close()
    open(go).read()
    return real()
setup.SigningKey.generate = paused
setup.init_appliance(Path(home), "alice", "Alice Adams", sys.argv[4]).close()
"""


def test_a_second_init_while_one_runs_is_refused_and_the_first_completes(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    ready, go = tmp_path / "ready", tmp_path / "go"
    os.mkfifo(ready)
    os.mkfifo(go)
    first = subprocess.Popen([sys.executable, "-c", _PAUSED_INIT, str(ready), str(go),
                              str(home), PASSWORD], stderr=subprocess.PIPE, text=True)
    try:
        with open(ready) as f:  # the first init is past its check, before the key
            f.read()
        second = run(home, "init", "--admin", "bob", "--full-name", "Bob Brown",
                     "--password-stdin", stdin=PASSWORD + "\n")
    finally:
        with open(go, "w"):
            pass
        _, err = first.communicate(timeout=120)
    assert second.returncode != 0
    assert second.stderr.startswith(f"error: another `appliance init` is under way at {home} ")
    assert second.stderr.count("\n") == 1, second.stderr
    assert first.returncode == 0, err
    r = run(home, "users", "list", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and r.stdout.startswith("alice "), r.stderr
    assert "bob" not in r.stdout
    r = run(home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr + r.stdout
