"""Bad input as people type it: one line, a non-zero exit, nothing lost or left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.clock import Clock
from appliance.context import Appliance
from tests.conftest import ADMIN, PASSWORD, cli_env

APPLIANCE = [sys.executable, "-m", "appliance"]


def run(home: Path, *args: str, user: str = ADMIN, prefix: tuple[str, ...] = (),
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *APPLIANCE, *args, "--user", user, "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True,
                          env=cli_env(home), timeout=120, cwd=cwd)


def as_permissions_say() -> tuple[str, ...]:
    """A command prefix under which file modes bind: nothing for an ordinary user; for root
    (as in CI), setpriv dropping the capabilities that override them."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: file modes do not bind")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ("setpriv", "--bounding-set", caps, "--inh-caps", caps)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode not in (0, 1), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ")
    return r.stderr


@pytest.fixture
def clock() -> Clock:
    """The CLI subprocess reads the real clock: the appliance is made on it too."""
    return Clock()


@pytest.fixture
def home(appliance: Appliance) -> Path:
    return appliance.layout.root


def events_of(home: Path, action: str) -> list[str]:
    r = run(home, "audit", "events", "--action", action)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if f" {action} " in line]


def test_audit_events_after_beyond_sqlite_integers_is_one_line(home: Path) -> None:
    err = one_line_error(run(home, "audit", "events", "--after", "9" * 25))
    assert "--after" in err
    assert run(home, "audit", "events", "--after", str(2**63 - 1)).stdout == "no events match\n"


def test_signatures_list_prints_the_id_that_show_takes(home: Path) -> None:
    r = run(home, "users", "review", "--reason", "quarterly review", "--acknowledge-statement")
    assert r.returncode == 0, r.stderr
    listed = run(home, "signatures", "list")
    assert listed.returncode == 0, listed.stderr
    sig_id = listed.stdout.split()[0]
    shown = run(home, "signatures", "show", sig_id)
    assert shown.returncode == 0, shown.stderr
    assert "Meaning:     reviewed" in shown.stdout


@pytest.mark.parametrize("victim", ["keys/appliance-signing.pem", "appliance.db", "config.json"])
def test_hw_record_never_overwrites_a_file(home: Path, victim: str) -> None:
    """A mistyped --out must not replace the signing key, the database or any other file."""
    target = home / victim
    before = target.read_bytes()
    err = one_line_error(run(home, "hw", "record", "--out", str(target)))
    assert "already exists" in err
    if victim != "appliance.db":  # which the login wrote to; verify below reads it
        assert target.read_bytes() == before
    assert events_of(home, "hardware.record") == []
    assert run(home, "audit", "verify").returncode == 0


def test_hw_record_writes_a_new_file_recorded_and_leaves_nothing_on_failure(
        home: Path, tmp_path: Path) -> None:
    out = tmp_path / "reading.json"
    r = run(home, "hw", "record", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert run(home, "hw", "show", "--reading", str(out)).returncode == 0
    assert len(events_of(home, "hardware.record")) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    one_line_error(run(home, "hw", "record", "--out", str(tmp_path / "nowhere" / "r.json")))
    assert len(events_of(home, "hardware.record")) == 1


def test_a_missing_signing_key_is_damage_not_no_appliance(home: Path) -> None:
    """It said "no appliance at HOME (run `appliance init` first)" over a whole trail."""
    key = home / "keys" / "appliance-signing.pem"
    key.rename(home / "kept.pem")
    err = one_line_error(run(home, "audit", "verify"))
    assert err.startswith(f"error: the appliance signing key {key} cannot be loaded (No such "
                          "file or directory)"), err
    assert "appliance init" not in err


@pytest.mark.parametrize("closed, code, says", [
    ("", 6, "error: cannot open the appliance database {home}/appliance.db: Permission denied"),
    ("keys", 7, "error: the appliance signing key {home}/keys/appliance-signing.pem cannot be "
                "loaded (Permission denied)"),
], ids=["home", "keys"])
def test_a_home_or_keys_this_user_may_not_search_is_one_line(
        home: Path, closed: str, code: int, says: str) -> None:
    """A home (or its keys/) another user owns was a PermissionError traceback."""
    prefix = as_permissions_say()
    folder = home / closed if closed else home
    mode = folder.stat().st_mode
    folder.chmod(0)
    try:
        r = run(home, "audit", "verify", prefix=prefix)
    finally:
        folder.chmod(mode)
    one_line_error(r)
    assert r.returncode == code and r.stderr.startswith(says.format(home=home)), r.stderr


@pytest.mark.parametrize("command", [("audit", "anchor", "--to"),
                                     ("audit", "export", "--format", "csv", "--out"),
                                     ("hw", "record", "--out")], ids=lambda c: c[1])
def test_an_empty_or_missing_directory_destination_writes_nothing(
        home: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    """`--to ""` (an unset shell variable) put the anchor or export in the current directory
    instead of on the media, and `--out /media/usb/exports/` (not made yet) a file named
    `exports`: typer's Path reads "" as "." and drops the trailing slash."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    err = one_line_error(run(home, *command, "", cwd=cwd))
    assert err == f"error: {command[-1]} is empty (name where to write with {command[-1]})\n"
    missing = tmp_path / "media" / "exports"
    (tmp_path / "media").mkdir()
    err = one_line_error(run(home, *command, f"{missing}/", cwd=cwd))
    assert err.startswith(f"error: directory {missing}/ does not exist ("), err
    assert list(cwd.iterdir()) == [] and list((tmp_path / "media").iterdir()) == []
    action = {"anchor": "audit.anchor", "export": "audit.export", "record": "hardware.record"}
    assert events_of(home, action[command[1]]) == []


@pytest.mark.parametrize("command", [("status",), ("publish", "--to", "{tmp}/out.tar")],
                         ids=["status", "publish"])
def test_bundle_commands_on_no_repository_say_so(tmp_path: Path,
                                                 command: tuple[str, ...]) -> None:
    """They said "nothing is being signed yet (run `appliance bundle sign` first)", and sign
    then said the directory is no repository."""
    args = [a.format(tmp=tmp_path) for a in command]
    r = subprocess.run([*APPLIANCE, "bundle", args[0], str(tmp_path / "nope"), *args[1:]],
                       capture_output=True, text=True, timeout=120)
    assert one_line_error(r) == (f"error: {tmp_path / 'nope'} is not a bundle repository "
                                 "(run `appliance bundle init-repo` first)\n")
    assert list(tmp_path.iterdir()) == []


def test_users_unlock_prints_the_name_it_unlocked_on_one_line(home: Path) -> None:
    """It echoed the name as typed: "AUDITOR unlocked" for the account auditor, and a
    newline in the typed name printed a second line."""
    r = run(home, "users", "unlock", " Carol ", "--reason", "confirmed by phone")
    assert r.returncode == 0 and r.stdout == "carol unlocked\n", r.stderr
    r = run(home, "users", "unlock", "x\ny", "--reason", "confirmed by phone")
    assert r.returncode == 0 and r.stdout == "x\\ny unlocked\n", r.stdout
