"""The CLI as a user types it: real subprocesses, real homes, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.immutable import immutable

APPLIANCE = [sys.executable, "-m", "appliance"]


def run(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    return subprocess.run([*APPLIANCE, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    home = tmp_path / "cli-home"
    r = run(home, "init", "--admin", "Alice", "--full-name", "Alice Adams",
            "--password-stdin", "--json", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["admin"] == "alice" and len(data["signing_key_id"]) == 64
    return home


def test_init_creates_home_key_and_hashed_password(cli_home: Path) -> None:
    key = cli_home / "keys" / "appliance-signing.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((cli_home / "appliance.db").stat().st_mode) == 0o600
    import sqlite3
    stored = sqlite3.connect(cli_home / "appliance.db").execute(
        "SELECT password_hash FROM users WHERE username = 'alice'").fetchone()[0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored


def test_init_twice_is_refused_with_one_line(cli_home: Path) -> None:
    r = run(cli_home, "init", "--admin", "bob", "--full-name", "Bob", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: an appliance already exists")
    assert "Traceback" not in r.stderr


def test_init_over_an_appliance_is_refused_before_the_password_is_asked(cli_home: Path
                                                                        ) -> None:
    """No --password-stdin and no terminal: the refusal comes first, not a password prompt."""
    r = run(cli_home, "init", "--admin", "bob", "--full-name", "Bob", stdin="")
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith("error: an appliance already exists") and "assword" not in r.stderr


def test_the_signing_key_is_ecdsa_p256(cli_home: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key((cli_home / "keys" / "appliance-signing.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_weak_password_refused_and_nothing_left(tmp_path: Path) -> None:
    home = tmp_path / "weak"
    r = run(home, "init", "--admin", "alice", "--full-name", "A", "--password-stdin",
            stdin="short\n")
    assert r.returncode == 2 and r.stderr.startswith("error: password is shorter")
    assert not home.exists()


def init(home: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(home, *extra, "init", "--admin", "alice", "--full-name", "Alice Adams",
               "--password-stdin", stdin=PASSWORD + "\n")


def test_init_refuses_a_directory_in_use_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """A typo such as `--home /srv` made that directory 0700 and filled it; a directory that
    holds anything (lost+found aside) is refused, and so is a file."""
    used = tmp_path / "srv"
    used.mkdir(mode=0o755)
    (used / "notes.txt").write_text("other people's files\n")
    r = init(used)
    assert r.returncode == 2 and r.stderr == (
        f"error: the appliance home {used} is not empty: it holds notes.txt (choose a new "
        "or empty directory with --home; nothing was changed)\n")
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]
    assert stat.S_IMODE(used.stat().st_mode) == 0o755

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = init(a_file)
    assert r.returncode == 2 and r.stderr == (
        f"error: the appliance home {a_file} is not a directory (choose another --home; "
        "nothing was changed)\n")

    mount = tmp_path / "mount point"       # a file system of its own, and a space
    (mount / "lost+found").mkdir(parents=True)
    assert init(mount).returncode == 0
    assert init(mount).stderr.startswith(f"error: an appliance already exists at {mount} ")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_init_refuses_an_empty_home_another_account_owns(tmp_path: Path) -> None:
    """An empty directory made by another account (in /tmp, on a share) was taken: init
    made it 0700 and wrote the key in it, but its owner keeps the right to rename what is
    inside, so could put their own keys/ or database in place of the appliance's."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    r = init(theirs)
    assert r.returncode == 2 and r.stderr == (
        f"error: the appliance home {theirs} belongs to another account (uid 65534) "
        "(choose a directory this account owns, or a new one; nothing was changed)\n")
    assert list(theirs.iterdir()) == [] and stat.S_IMODE(theirs.stat().st_mode) == 0o755


def test_nothing_init_writes_is_writable_by_others_under_a_permissive_umask(
        tmp_path: Path) -> None:
    """Under `umask 000` config.json and the public key were 0666: anyone who could reach
    them could change the settings or the key a verifier is pointed at."""
    home = tmp_path / "home"
    r = subprocess.run([*APPLIANCE, "--home", str(home), "init", "--admin", "alice",
                        "--full-name", "Alice Adams", "--password-stdin"],
                       input=PASSWORD + "\n", capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r.stderr
    loose = [f"{p.relative_to(home)} {oct(stat.S_IMODE(p.lstat().st_mode))}"
             for p in [home, *home.rglob("*")]
             if not p.is_symlink() and p.lstat().st_mode & 0o022]
    assert loose == []
    assert stat.S_IMODE((home / "keys" / "appliance-signing.pem").stat().st_mode) == 0o600


_KILL_AT = {  # os._exit where a power cut or kill -9 could stop init
    "key": "setup.save_settings = die",
    "schema": "real = setup.db.migrate\n"
              "setup.db.migrate = lambda conn: (real(conn), die())",
    "first admin": "setup.insert_user = die",
}


@pytest.mark.parametrize("stage", list(_KILL_AT))
def test_an_interrupted_init_names_what_to_remove_then_inits(tmp_path: Path,
                                                               stage: str) -> None:
    """An init killed half-way left a home that `init` called an existing appliance and
    every other command called no appliance (or one nobody could log in to): a dead end.
    Now the appliance id commits with the first admin, and both name the files to remove."""
    home = tmp_path / "home"
    code = ("import os\nfrom pathlib import Path\nimport appliance.services.setup as setup\n"
            "def die(*a, **k):\n    os._exit(9)\n" + _KILL_AT[stage] + "\n"
            f"setup.init_appliance(Path({str(home)!r}), 'alice', 'A', {PASSWORD!r})\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    left = {"key": ["keys"]}.get(stage, ["keys", "appliance.db", "config.json"])
    listed = ", ".join(str(home / n) for n in left[:-1])
    hint = (f"remove {listed} and {home / left[-1]}" if listed else f"remove {home / left[0]}"
            ) + ", then run `appliance init` again)\n"

    r = init(home)
    assert r.returncode == 3 and r.stderr == (
        f"error: an interrupted `appliance init` left a half-made appliance at {home} ("
        + hint), r.stderr
    r = run(home, "users", "list", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 3
    if stage != "key":     # with no database, the hint is `appliance init`, which says it
        assert r.stderr == (f"error: appliance at {home} was never initialised completely ("
                            + hint), r.stderr
    for name in left:
        path = home / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert init(home).returncode == 0
    r = run(home, "users", "list", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and r.stdout.startswith("alice ")


def test_an_empty_home_option_is_refused_not_the_current_directory(tmp_path: Path) -> None:
    """`--home "$UNSET"` became the current directory, which init took over; and a relative
    --home was printed as typed, not as the directory it names."""
    r = subprocess.run([*APPLIANCE, "--home", "", "init", "--admin", "alice", "--full-name",
                        "A", "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr == (
        "error: --home is empty (name the appliance home's directory, or leave --home out "
        "for the default)\n")
    assert list(tmp_path.iterdir()) == []
    r = subprocess.run([*APPLIANCE, "--home", "rel", "init", "--admin", "alice", "--full-name",
                        "A", "--password-stdin", "--json"], input=PASSWORD + "\n",
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["home"] == str(tmp_path / "rel")


def test_verify_clean_trail_exit_zero_with_json(cli_home: Path) -> None:
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin", "--json",
            stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["events_checked"] >= 3


def test_wrong_password_one_line_and_recorded(cli_home: Path) -> None:
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin="not the password\n")
    assert r.returncode == 4
    assert r.stderr.strip() == ("error: login failed: unknown user or wrong password "
                                "(check the username and password; repeated failures lock the "
                                "account)")
    import sqlite3
    outcome = sqlite3.connect(cli_home / "appliance.db").execute(
        "SELECT outcome FROM audit_view WHERE action = 'auth.login' ORDER BY seq DESC"
    ).fetchone()[0]
    assert outcome == "failure"


def test_missing_home_is_a_clear_error(tmp_path: Path) -> None:
    r = run(tmp_path / "nowhere", "audit", "verify", "--user", "x", "--password-stdin",
            stdin="x\n")
    assert r.returncode == 3 and r.stderr.startswith("error: no appliance at")


def test_anchor_then_truncation_fails_verify_with_exit_7(cli_home: Path, tmp_path: Path) -> None:
    r = run(cli_home, "audit", "anchor", "--to", str(tmp_path), "--user", "alice",
            "--password-stdin", "--json", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    anchor = json.loads(r.stdout)["anchor"]
    assert "PRIVATE" not in Path(anchor).read_text()
    import sqlite3
    conn = sqlite3.connect(cli_home / "appliance.db")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    # Deep enough that the verify command's own login event stays below the anchor's size
    # (a tail cut and then appended to again reads as a rewrite: anchor-mismatch).
    conn.execute("DELETE FROM audit_events WHERE seq > 1")
    conn.commit()
    conn.close()
    r = run(cli_home, "audit", "verify", "--anchor", anchor, "--user", "alice",
            "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 7
    assert "truncated" in r.stdout or "rollback" in r.stdout
    assert r.stderr.startswith("error: audit trail verification failed")


@pytest.fixture
def odd_files(tmp_path: Path) -> Path:
    """Things a hurried operator passes by mistake: a binary file, broken YAML."""
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "engine.bin").write_bytes(b"\x89\xb7\x00\xff" * 256)
    (odd / "vars.yml").write_text("{region: [eu, \n")
    return odd


@pytest.mark.parametrize("args, exit_code, says", [
    (("init", "--admin", "alice", "--full-name", "A", "--password-stdin"), 2,
     "error: the appliance home {odd}/engine.bin is not a directory (choose another"),
    (("bundle", "keygen", "{odd}/engine.bin/k.pem"), 2,
     "error: cannot create {odd}/engine.bin/k.pem: {odd}/engine.bin is not a directory"),
    (("provision", "run", "site.yml", "--inventory", "local", "--vars-file",
      "{odd}/engine.bin", "--user", "alice", "--password-stdin"), 2,
     "error: cannot read variables file {odd}/engine.bin: 'utf-8' codec can't decode"),
    (("provision", "run", "site.yml", "--inventory", "local", "--vars-file",
      "{odd}/vars.yml", "--user", "alice", "--password-stdin"), 2,
     "error: cannot read variables file {odd}/vars.yml: expected the node content, but found "
     "'<stream end>' at line 2, column 1 (pass a YAML or JSON file of NAME: VALUE)"),
])
def test_wrong_files_get_one_line_and_change_nothing(cli_home: Path, odd_files: Path,
                                                     args: tuple, exit_code: int,
                                                     says: str) -> None:
    home = odd_files / "engine.bin" if args[0] == "init" else cli_home
    before = sorted(p.name for p in odd_files.iterdir())
    r = run(home, *(a.format(odd=odd_files) for a in args), stdin=PASSWORD + "\n")
    assert r.returncode == exit_code, r.stderr
    assert r.stderr.startswith(says.format(odd=odd_files)) and r.stderr.count("\n") == 1
    assert sorted(p.name for p in odd_files.iterdir()) == before


def _overwrite(db: Path, offset: int, size: int) -> None:
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * size)


def test_a_file_that_is_no_database_is_one_line_exit_7(cli_home: Path) -> None:
    _overwrite(cli_home / "appliance.db", 0, 16)  # the SQLite header
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 7 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: the appliance database {cli_home}/appliance.db is "
                               "damaged (file is not a database) (keep the file")


def test_a_corrupt_page_found_on_opening_is_one_line_exit_7(cli_home: Path) -> None:
    _overwrite(cli_home / "appliance.db", *_root_page(cli_home / "appliance.db", "meta"))
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 7 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: the appliance database {cli_home}/appliance.db is "
                               "damaged (database disk image is malformed) (keep the file")


def test_a_corrupt_page_found_mid_command_is_one_line_exit_7(cli_home: Path) -> None:
    _overwrite(cli_home / "appliance.db", *_root_page(cli_home / "appliance.db",
                                                     "audit_events"))
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 7 and r.stderr.count("\n") == 1, r.stderr
    # The login's own audit event is the first to meet the page: fail closed, and say why.
    assert r.stderr.startswith(
        "error: the audit trail could not record 'auth.login': the appliance database is "
        "damaged (database disk image is malformed) (keep the file for investigation; restore")


def _root_page(db: Path, table: str) -> tuple[int, int]:
    import sqlite3
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
                        ).fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return (root - 1) * page, page


def test_a_corrupt_page_met_by_a_read_is_one_line_exit_7(cli_home: Path) -> None:
    _overwrite(cli_home / "appliance.db", *_root_page(cli_home / "appliance.db", "users"))
    r = run(cli_home, "audit", "verify", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")  # the login reads the accounts first
    assert r.returncode == 7 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: the appliance database is damaged (database disk image "
                               "is malformed) (keep the file for investigation; restore")


def _backup(home: Path, to: Path) -> None:
    r = run(home, "backup", "create", "--to", str(to), "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr


def test_a_damaged_backup_is_one_line_exit_7(cli_home: Path, tmp_path: Path) -> None:
    from appliance.backup_manifest import MANIFEST, seal
    from appliance.keys import SigningKey

    bk = tmp_path / "bk"
    _backup(cli_home, bk)
    db = bk / "appliance.db"
    _overwrite(db, *_root_page(db, "audit_events"))
    r = run(cli_home, "backup", "verify", str(bk))
    assert r.returncode == 7 and r.stderr == (
        f"error: appliance.db in backup {bk} was altered since the backup was made "
        "(this backup cannot be restored; use another one)\n")
    (bk / MANIFEST).unlink()  # signed again with the key the backup holds: the chain finds it
    seal(bk, SigningKey.load(bk / "keys" / "appliance-signing.pem"), {})
    r = run(cli_home, "backup", "verify", str(bk))
    assert r.returncode == 7 and r.stderr == (
        f"error: the backup {bk} is damaged (database disk image is malformed) "
        "(this backup cannot be restored; use another one)\n")


def test_backup_verify_names_the_key_and_restore_refuses_a_non_empty_home(
        cli_home: Path, tmp_path: Path) -> None:
    import sqlite3

    bk, target = tmp_path / "bk", tmp_path / "new-home"
    _backup(cli_home, bk)
    fp = sqlite3.connect(cli_home / "appliance.db").execute(
        "SELECT json_extract(body, '$.key_id') FROM audit_checkpoints LIMIT 1").fetchone()[0]
    r = run(cli_home, "backup", "verify", str(bk))
    assert r.returncode == 0 and f"signed by appliance key {fp} (compare it" in r.stdout
    r = run(cli_home, "backup", "verify", str(bk), "--expect-fingerprint", "0" * 64)
    assert r.returncode == 7 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: backup {bk} is signed by appliance key {fp}, not the "
                               "expected one")
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    r = run(target, "backup", "restore", str(bk), "--user", "alice", stdin="")
    assert r.returncode == 2 and r.stderr == (  # before any password is asked for
        f"error: {target} is not empty (restore into a new or empty --home)\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("new-home")] == ["new-home"]
    (target / "notes.txt").unlink()
    r = run(target, "backup", "restore", str(bk))
    assert r.returncode == 2 and r.stderr == (
        "error: this command acts on behalf of a person (pass --user NAME)\n")
    r = run(target, "backup", "restore", str(bk), "--expect-fingerprint", fp, "--user", "alice",
            "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and f"appliance key {fp} (the expected one)" in r.stdout, r.stderr
    assert (target / "appliance.db").exists()


def test_a_backup_without_its_public_key_is_one_line_exit_2(cli_home: Path, tmp_path: Path
                                                            ) -> None:
    bk = tmp_path / "bk"
    _backup(cli_home, bk)
    (bk / "keys" / "appliance-signing.pub.pem").unlink()
    r = run(cli_home, "backup", "verify", str(bk))
    assert r.returncode == 2 and r.stderr == (
        f"error: {bk} is not an appliance backup (it has no public key "
        "keys/appliance-signing.pub.pem) (pass a whole directory written by "
        "`appliance backup create`)\n")


def test_a_stored_newline_or_escape_cannot_forge_a_line_of_audit_events(cli_home: Path
                                                                          ) -> None:
    """Typed reasons refuse them, but events the appliance writes itself can carry text
    from elsewhere (a failure's message, a name on media): the listing escapes them."""
    from appliance.audit.events import SYSTEM_ACTOR, Event
    from appliance.context import Appliance
    app = Appliance.open(cli_home)
    try:
        with app.transaction():
            app.trail.append(Event("health.check", SYSTEM_ACTOR, "release", "r1",
                                   outcome="failure",
                                   reason="probe said:\n      9 forged update.approve\x1b[2K"))
    finally:
        app.close()
    r = run(cli_home, "audit", "events", "--action", "health.check", "--user", "alice",
            "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    assert line.endswith("reason: probe said:\\n      9 forged update.approve\\x1b[2K")
    assert "\x1b" not in r.stdout


HEAVY = ("torch", "transformers", "peft", "vllm", "tensorrt_llm")


def test_help_does_not_import_heavy_modules(tmp_path: Path) -> None:
    """The ML extras are not installed here, so a stand-in of each is put first on the path:
    an import of one, even a guarded `try: import torch`, then shows in sys.modules."""
    for name in HEAVY:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    code = ("import sys\nfrom appliance.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"heavy = [m for m in {(*HEAVY, 'textual')!r} if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=env)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    # The stand-ins are importable in that process: the check above could have failed.
    r = subprocess.run([sys.executable, "-c", "import torch, vllm; print(torch.__file__)"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == str(tmp_path / "torch" / "__init__.py"), r.stderr


@pytest.mark.parametrize("args", [["users", "add"], ["nosuch"], ["audit", "verify", "--bogus"]])
def test_usage_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str]) -> None:
    r = run(tmp_path / "h", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr and "--help" in r.stderr


def test_text_output_shows_brackets_as_typed(tmp_path: Path) -> None:
    """Names come from people and media: "[/]" prints as typed, never as Rich markup."""
    home = tmp_path / "brackets"
    name = "Dr [/] Ann [red]Lee"
    r = run(home, "init", "--admin", "ann", "--full-name", name, "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    r = run(home, "users", "list", "--user", "ann", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert name in r.stdout and "Traceback" not in r.stderr


def _event_count(home: Path) -> int:
    import sqlite3
    conn = sqlite3.connect(home / "appliance.db")
    try:
        return conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("args", [
    ("users", "disable", "alice", "--reason", "typed in latin-1: caf\udce9"),
    ("users", "list", "--user", "al\udcffice"),
    ("audit", "events", "--actor", "caf\udce9", "--user", "alice"),
])
def test_an_argument_that_is_not_utf8_is_one_line_and_changes_nothing(
        cli_home: Path, args: tuple) -> None:
    """A terminal in another encoding passes bytes that are not UTF-8 (Python keeps them as
    surrogates): SQLite and the trail's canonical JSON refused them with a traceback."""
    before = _event_count(cli_home)
    r = run(cli_home, *args, "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: argument ") and " is not UTF-8 text: " in r.stderr
    assert _event_count(cli_home) == before


@pytest.mark.parametrize("encoding", ["utf-8:surrogateescape", "utf-8:strict"])
def test_a_password_that_is_not_utf8_is_one_line(tmp_path: Path, encoding: str) -> None:
    home = tmp_path / "latin1"
    env = dict(os.environ, APPLIANCE_HOME=str(home), PYTHONIOENCODING=encoding)
    r = subprocess.run([*APPLIANCE, "init", "--admin", "alice", "--full-name", "A",
                        "--password-stdin"], input=b"correct horse caf\xe9 battery\n",
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode() == ("error: the password is not UTF-8 text (type it in a UTF-8 "
                                 "terminal, or pipe it UTF-8 encoded)\n")
    assert not home.exists()


@contextlib.contextmanager
def read_only(path: Path):
    """`path` unwritable for real: its mode for an ordinary user, the immutable attribute
    for root (as in CI), until the block ends."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    with immutable(path):
        yield


@pytest.mark.parametrize("what, says", [
    ("home", "error: cannot open the appliance database {db}: unable to open database file "
             "(check disk space and permissions of the appliance home; nothing was changed)"),
    ("database", "error: could not write to the appliance database: attempt to write a "
                 "readonly database (check disk space and permissions of the appliance home; "
                 "nothing was changed)"),
], ids=["home", "database"])
def test_a_read_only_home_or_database_is_one_line_exit_6(cli_home: Path, what: str,
                                                          says: str) -> None:
    """Every command logs in, and a login is written: on a home or database that cannot be
    written, SQLite's error was a traceback (opening; the login's own write)."""
    db = cli_home / "appliance.db"
    before = _event_count(cli_home)
    for password in (PASSWORD, "not the password"):  # the failure is written too
        with read_only(cli_home if what == "home" else db):
            r = run(cli_home, "users", "list", "--user", "alice", "--password-stdin",
                    stdin=password + "\n")
        assert r.returncode == 6 and r.stderr == says.format(db=db) + "\n", r.stderr
    assert _event_count(cli_home) == before


@pytest.mark.parametrize("config, says", [
    ({"lockout": {"max_failures": "5"}}, "lockout.max_failures is '5', not a whole number"),
    ({"password": {"scrypt_n": 16384.0}}, "password.scrypt_n is 16384.0, not a whole number"),
    ({"evaluation": {"require_evidence": 0}}, "evaluation.require_evidence is 0, not true or "
                                              "false"),
    ({"evaluation": {"min_metrics": {"exact_match": "0.9"}}},
     "evaluation.min_metrics is {'exact_match': '0.9'}, not an object of metric names to "
     "numbers"),
], ids=["quoted", "float", "int-for-bool", "quoted-gate"])
def test_a_config_value_of_the_wrong_type_is_one_line(cli_home: Path, config: dict,
                                                      says: str) -> None:
    """A hand-edited config.json with a quoted number loaded, then failed as a TypeError
    traceback at the first comparison (the lockout check of every login)."""
    (cli_home / "config.json").write_text(json.dumps(config))
    r = run(cli_home, "users", "list", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 2 and r.stderr == (
        f"error: {says} (fix config.json or restore it from the installer media)\n")


@pytest.mark.parametrize("content", [b"", b"-----BEGIN PRIVATE KEY-----\ngarbage\n"],
                         ids=["empty", "garbage"])
def test_a_damaged_signing_key_is_one_line_exit_7(cli_home: Path, content: bytes) -> None:
    """The key is read at every opening: a damaged one was cryptography's ValueError
    traceback."""
    key = cli_home / "keys" / "appliance-signing.pem"
    key.write_bytes(content)
    r = run(cli_home, "users", "list", "--user", "alice", "--password-stdin",
            stdin=PASSWORD + "\n")
    assert r.returncode == 7 and r.stderr == (
        f"error: the appliance signing key {key} cannot be loaded (not an unencrypted PEM "
        "key) (keep the file for investigation; restore a verified backup with `appliance "
        "backup restore`)\n")


def test_an_anchor_never_overwrites_a_file(cli_home: Path, tmp_path: Path) -> None:
    """`--to FILE` replaced whatever was there, an older anchor (the evidence that catches a
    rollback) or a file named by mistake; exports already refused to overwrite."""
    media = tmp_path / "media"
    media.mkdir()
    notes, link = media / "notes.txt", media / "link.json"
    notes.write_text("keep me")
    link.symlink_to(notes)
    first = run(cli_home, "audit", "anchor", "--to", str(media / "a.json"), "--user", "alice",
                "--password-stdin", stdin=PASSWORD + "\n")
    assert first.returncode == 0, first.stderr
    older = (media / "a.json").read_bytes()
    for taken in (media / "a.json", notes, link):
        r = run(cli_home, "audit", "anchor", "--to", str(taken), "--user", "alice",
                "--password-stdin", stdin=PASSWORD + "\n")
        assert r.returncode == 2 and r.stderr == (
            f"error: {taken} already exists (anchors never overwrite; choose a new file name "
            "or a directory)\n")
    assert (media / "a.json").read_bytes() == older and notes.read_text() == "keep me"
    assert sorted(p.name for p in media.iterdir()) == ["a.json", "link.json", "notes.txt"]


def test_an_inconsistent_update_status_is_one_error_line_exit_7(cli_home: Path) -> None:
    """The status printed its findings on stdout and exited 7 with nothing on stderr."""
    (cli_home / "releases").mkdir(exist_ok=True)
    (cli_home / "releases" / "current").symlink_to("demo/9")
    for extra in ((), ("--json",)):
        r = run(cli_home, "update", "status", "--user", "alice", "--password-stdin", *extra,
                stdin=PASSWORD + "\n")
        assert r.returncode == 7 and r.stderr == (
            "error: the releases are inconsistent: no bundle is ACTIVE but current points to "
            "demo/9 (report it to the security officer; the status lists every problem)\n")
    assert json.loads(r.stdout)["problems"] == ["no bundle is ACTIVE but current points to "
                                                "demo/9"]
