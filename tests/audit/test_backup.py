"""11.10(c): backups restore exactly the records, proven by the audit chain."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.audit.events import Actor, Event
from appliance.backup_manifest import MANIFEST, seal
from appliance.context import Appliance
from appliance.errors import (
    AlreadyInitialised,
    ApplianceError,
    IntegrityError,
    InvalidInput,
    PermissionDenied,
)
from appliance.keys import SigningKey
from appliance.services import backup
from tests.conftest import ADMIN, PASSWORD
from tests.mounts import private_mounts


def _events(app: Appliance, n: int) -> None:
    for i in range(n):
        with app.transaction():
            app.trail.append(Event("test.record", Actor("bob", "Bob", "it"), "r", str(i)))


def test_11_10c_backup_verifies_and_restores_exact_records(appliance, admin_session,
                                                           tmp_path: Path) -> None:
    _events(appliance, 25)
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    assert result.path.is_dir() and not (tmp_path / "bk.partial").exists()
    report = backup.verify_backup(result.path)
    assert report.ok and report.trail.events_checked == result.events
    assert report.key_fingerprint == result.key_fingerprint == appliance.key.key_id
    assert set(report.files) == {"anchor.json", "appliance.db", "config.json",
                                 "keys/appliance-signing.pem", "keys/appliance-signing.pub.pem"}
    restored = tmp_path / "restored"
    backup.restore_backup(result.path, restored, ADMIN, PASSWORD)
    app2 = Appliance.open(restored)
    try:
        rows = lambda c: c.execute("SELECT seq, hash, body FROM audit_events "  # noqa: E731
                                   "WHERE seq <= ? ORDER BY seq", (result.events,)).fetchall()
        assert rows(app2.conn) == rows(appliance.conn)
        last = app2.conn.execute("SELECT action FROM audit_view ORDER BY seq DESC LIMIT 1")
        assert last.fetchone()[0] == "backup.restore"
        assert app2.appliance_id == appliance.appliance_id
    finally:
        app2.close()


def test_a_restore_is_done_by_a_person_the_backup_knows_and_names_them(
        appliance, admin_session, make_user, tmp_path: Path) -> None:
    """The restored trail says who restored it: someone who logs in, with their password,
    to an account the backup holds and whose role may restore. A wrong password or another
    role restores nothing."""
    from appliance.errors import AuthenticationFailed, PermissionDenied
    make_user(["it"], username="ivan")
    make_user(["auditor"], username="ada")
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    target = tmp_path / "restored"
    with pytest.raises(AuthenticationFailed):
        backup.restore_backup(bk, target, "ivan", "not the password")
    with pytest.raises(PermissionDenied, match="ada may not backup.restore"):
        backup.restore_backup(bk, target, "ada", PASSWORD)
    assert not target.exists() and not (tmp_path / "restored.restoring").exists()
    backup.restore_backup(bk, target, "ivan", PASSWORD, terminal="dr-console")
    with Appliance.open(target) as app:
        rows = app.conn.execute("SELECT body FROM audit_view WHERE action IN "
                                "('auth.login', 'backup.restore') ORDER BY seq DESC LIMIT 2")
        restore, login = (json.loads(body) for (body,) in rows.fetchall())
    assert (login["action"], login["outcome"], login["target"]["id"]) == (
        "auth.login", "success", "ivan")
    assert restore["action"] == "backup.restore"
    assert (restore["actor"]["username"], restore["actor"]["role"], restore["terminal"]) == (
        "ivan", "it", "dr-console")


def test_a_restore_goes_ahead_when_the_restorers_password_must_change(
        appliance, admin_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary (or expired) password in the backup cannot be changed before there is an
    appliance to change it in: the restore goes ahead, and the restored appliance asks for
    the change at the next login. A wrong password is refused before anything is copied."""
    from appliance.errors import AuthenticationFailed, PasswordChangeRequired
    from appliance.services import auth, users
    users.add_user(appliance, admin_session, "tina", "Tina Tech", ["it"], PASSWORD,
                   "night shift")  # a temporary password, to change at first login
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    copies, copytree = [], shutil.copytree
    monkeypatch.setattr(backup.shutil, "copytree",
                        lambda *a, **k: copies.append(a) or copytree(*a, **k))
    with pytest.raises(AuthenticationFailed, match="unknown user or wrong password"):
        backup.restore_backup(bk, tmp_path / "restored", "tina", "not it")
    assert copies == [] and not (tmp_path / "restored").exists()
    backup.restore_backup(bk, tmp_path / "restored", "TINA", PASSWORD)
    with Appliance.open(tmp_path / "restored") as app:
        [(who,)] = app.conn.execute("SELECT body ->> '$.actor.username' FROM audit_view "
                                    "WHERE action = 'backup.restore'").fetchall()
        session = auth.login(app, "tina", PASSWORD)
        assert session.must_change_password
        with pytest.raises(PasswordChangeRequired):
            users.users(app, session)
    assert who == "tina"


def _reseal(path: Path, key: SigningKey | None = None) -> None:
    """What someone holding a backup can do: it holds the signing key, so the manifest can
    be signed again; a new key needs the public key swapped too. What it summarises is kept."""
    body = json.loads((path / MANIFEST).read_text())["manifest"]
    (path / MANIFEST).unlink()
    if key is None:
        key = SigningKey.load(path / "keys" / "appliance-signing.pem")
    else:
        (path / "keys" / "appliance-signing.pub.pem").write_bytes(
            key.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    seal(path, key, {k: v for k, v in body.items() if k not in ("key_id", "files")})


def _sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_tampered_backup_is_detected_and_not_restored(appliance, admin_session,
                                                      tmp_path: Path) -> None:
    """Even with the manifest signed again by the key the backup holds, the chain finds it."""
    _events(appliance, 5)
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    _sql(result.path / "appliance.db", "DROP TRIGGER audit_events_no_delete",
         "DELETE FROM audit_events WHERE seq > 3")
    with pytest.raises(IntegrityError, match="appliance.db in backup .* was altered"):
        backup.verify_backup(result.path)
    _reseal(result.path)
    assert not backup.verify_backup(result.path).ok
    with pytest.raises(IntegrityError):
        backup.restore_backup(result.path, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()


def test_restore_never_overwrites_an_appliance(appliance, admin_session, tmp_path) -> None:
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    with pytest.raises(AlreadyInitialised):
        backup.restore_backup(result.path, appliance.layout.root, ADMIN, PASSWORD)
    with pytest.raises(InvalidInput):
        backup.create_backup(appliance, admin_session, tmp_path / "bk")


def test_only_it_or_security_may_back_up(appliance, make_user, tmp_path) -> None:
    with pytest.raises(PermissionDenied):
        backup.create_backup(appliance, make_user(["ml"]), tmp_path / "bk")
    assert backup.create_backup(appliance, make_user(["it"]), tmp_path / "bk2").events > 0


def _backup_events(app: Appliance) -> list[tuple[str, str, str]]:
    rows = app.conn.execute("SELECT body FROM audit_view WHERE action GLOB 'backup.*' "
                            "ORDER BY seq").fetchall()
    return [(json.loads(b)["action"], json.loads(b)["outcome"],
             json.loads(b)["details"].get("error", "")) for (b,) in rows]


def test_a_backup_removes_the_copy_a_killed_backup_left_with_the_key(
        appliance, admin_session, tmp_path: Path) -> None:
    """A backup killed mid-copy leaves its half-built copy, signing key included, beside
    its --to; the next backup there removes it (and says so), but never a running one's."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f".bk.{dead}-0a1b2c3d.partial"
    running = tmp_path / f".bk.{os.getpid()}-4e5f6a7b.partial"
    for partial in (left, running):
        (partial / "keys").mkdir(parents=True)
        (partial / "keys" / "appliance-signing.pem").write_text("a copy of the key")
    backup.create_backup(appliance, admin_session, tmp_path / "bk")
    assert not left.exists() and running.exists()
    [removed] = [json.loads(b)["details"] for (b,) in appliance.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'backup.partial_removed'")]
    assert removed["removed"] == [left.name]


def test_backup_to_media_that_is_not_mounted_is_refused_and_not_recorded(
        appliance, admin_session, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        backup.create_backup(appliance, admin_session, tmp_path / "usb" / "bk")
    assert not (tmp_path / "usb").exists() and _backup_events(appliance) == []


def test_a_backup_inside_the_appliance_home_is_refused_and_not_recorded(
        appliance, admin_session) -> None:
    for to in (appliance.layout.root / "bk", appliance.layout.keys / "bk",
               appliance.layout.root / ".." / appliance.layout.root.name / "bk"):
        with pytest.raises(InvalidInput, match="inside the appliance home"):
            backup.create_backup(appliance, admin_session, to)
    assert not (appliance.layout.root / "bk").exists() and _backup_events(appliance) == []


def test_backup_that_cannot_be_written_is_a_recorded_failure(appliance, admin_session
                                                             ) -> None:
    """/proc takes no new directories, for root too: a real write failure."""
    with pytest.raises(ApplianceError, match=r"^could not write the backup to /proc/bk: ") as e:
        backup.create_backup(appliance, admin_session, Path("/proc/bk"))
    assert e.value.hint == "check that the backup media is mounted, writable and not full"
    [start, (action, outcome, error)] = _backup_events(appliance)
    assert start == ("backup.start", "success", "")
    assert (action, outcome) == ("backup.create", "failure") and error
    assert [p.name for p in Path("/proc").glob("*bk*partial")] == []


def test_a_backup_is_recorded_started_then_created_with_its_checkpoint(
        appliance, admin_session, tmp_path: Path) -> None:
    """The start (with the checkpoint the backup carries) is recorded first, and the
    creation only once the copy is whole: a backup killed half-way leaves no record that
    claims a backup. The backup holds the start, not its own creation."""
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    assert _backup_events(appliance) == [("backup.start", "success", ""),
                                         ("backup.create", "success", "")]
    created = json.loads(appliance.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'backup.create'").fetchone()[0])
    assert created["details"]["tree_size"] == result.events
    assert created["details"]["head_hash"] == result.head_hash
    inside = sqlite3.connect(f"file:{tmp_path / 'bk' / 'appliance.db'}?mode=ro", uri=True)
    try:
        actions = [json.loads(b)["action"] for (b,) in inside.execute(
            "SELECT body FROM audit_events WHERE body LIKE '%backup.%' ORDER BY seq")]
    finally:
        inside.close()
    assert actions == ["backup.start"]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def _edit_config(path: Path, section: str, key: str, value: object) -> None:
    config = json.loads((path / "config.json").read_text())
    config[section][key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("tamper", ["roles", "password_hash", "settings", "extra", "missing"])
def test_altered_state_or_settings_are_refused_and_not_restored(
        appliance, admin_session, make_user, tmp_path: Path, tamper: str) -> None:
    """The chain covers only the audit tables: the manifest covers every file."""
    make_user(["auditor"], username="aud")
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    if tamper == "roles":
        _sql(bk / "appliance.db", "UPDATE users SET roles = '[\"security\",\"it\",\"auditor\"]' "
             "WHERE username = 'aud'")
    elif tamper == "password_hash":
        _sql(bk / "appliance.db", "UPDATE users SET password_hash = (SELECT password_hash "
             "FROM users WHERE username = 'aud') WHERE username = 'alice'")
    elif tamper == "settings":
        _edit_config(bk, "password", "min_length", 1)
    elif tamper == "extra":
        (bk / "keys" / "extra.pem").write_text("x")
    else:
        (bk / "config.json").unlink()
    with pytest.raises(IntegrityError, match="backup"):
        backup.verify_backup(bk)
    with pytest.raises(IntegrityError):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()
    assert not (tmp_path / "restored.restoring").exists()


def test_the_signing_key_is_reported_and_can_be_required(appliance, admin_session,
                                                         tmp_path: Path) -> None:
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    before = sorted(p.name for p in bk.iterdir())
    fp = appliance.key.key_id
    spaced = " ".join(fp[i:i + 4] for i in range(0, 64, 4)).upper()
    assert backup.verify_backup(bk, expect_fingerprint=spaced).key_fingerprint == fp
    assert sorted(p.name for p in bk.iterdir()) == before  # verifying adds no -wal or -shm
    other = SigningKey.generate()
    with pytest.raises(IntegrityError, match="not the expected one"):
        backup.verify_backup(bk, expect_fingerprint=other.key_id)
    _reseal(bk, other)  # a whole backup signed again by a key of someone else's
    with pytest.raises(IntegrityError, match="signing key in backup .* does not match"):
        backup.verify_backup(bk)
    with pytest.raises(IntegrityError, match=f"signed by appliance key {other.key_id}, not"):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD, expect_fingerprint=fp)
    assert not (tmp_path / "restored").exists()


def test_settings_that_do_not_load_fail_verify_and_restore_leaves_nothing(
        appliance, admin_session, tmp_path: Path) -> None:
    """Formerly the restore failed in Appliance.open after the rename: a home without its
    backup.restore event."""
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    _edit_config(bk, "approval", "required_admin_signatures", 0)
    _reseal(bk)
    with pytest.raises(IntegrityError, match="settings in backup .* do not load: approval"):
        backup.verify_backup(bk)
    (tmp_path / "restored").mkdir()
    with pytest.raises(IntegrityError, match=f"settings in backup {bk} do not load"):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert list((tmp_path / "restored").iterdir()) == []
    assert not (tmp_path / "restored.restoring").exists()


def test_restore_into_a_non_empty_directory_is_refused_and_copies_nothing(
        appliance, admin_session, tmp_path: Path) -> None:
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    target = tmp_path / "restored"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="is not empty"):
        backup.restore_backup(bk, target, ADMIN, PASSWORD)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "restored.restoring").exists()
    (target / "notes.txt").unlink()
    backup.restore_backup(bk, target, ADMIN, PASSWORD)  # an empty directory is restored into
    with Appliance.open(target) as app2:
        last = app2.conn.execute("SELECT action FROM audit_view ORDER BY seq DESC LIMIT 1")
        assert last.fetchone()[0] == "backup.restore"
    assert not (target / MANIFEST).exists() and not (target / "anchor.json").exists()


def test_a_backup_without_its_public_key_is_not_a_backup(appliance, admin_session,
                                                         tmp_path: Path) -> None:
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    (bk / "keys" / "appliance-signing.pub.pem").unlink()
    with pytest.raises(InvalidInput, match="is not an appliance backup .*no public key"):
        backup.verify_backup(bk)


@pytest.mark.parametrize("signature", [5, None, ["a"], "not base64 !"])
def test_a_manifest_signature_that_is_not_one_is_refused_plainly(appliance, admin_session,
                                                                  tmp_path: Path, signature
                                                                  ) -> None:
    """The signature field is not covered by itself: anyone who can write the backup can
    set it to anything, and the answer must still be the one-line refusal."""
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    doc = json.loads((bk / MANIFEST).read_text())
    doc["signature"] = signature
    (bk / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="backup"):
        backup.verify_backup(bk)
    with pytest.raises(IntegrityError):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()


def test_a_manifest_nested_too_deeply_to_parse_is_refused_plainly(appliance, admin_session,
                                                                   tmp_path: Path) -> None:
    """Read before its signature is checked: a RecursionError must not escape."""
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    doc = json.loads((bk / MANIFEST).read_text())
    doc["manifest_text"] = "[" * 100_000 + "]" * 100_000
    (bk / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="unreadable or altered"):
        backup.verify_backup(bk)
    (bk / MANIFEST).write_text('{"manifest":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(IntegrityError, match="unreadable or altered"):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()
    assert not (tmp_path / "restored.restoring").exists()


def test_a_copy_that_fails_for_many_files_is_one_short_line(appliance, admin_session,
                                                            tmp_path: Path) -> None:
    """copytree reports every file it could not copy (a full disk: all of them) in one
    exception; the refusal names the first, and nothing is left behind."""
    import os
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    for name in ("pipe-a", "pipe-b", "pipe-c"):
        os.mkfifo(bk / name)
    with pytest.raises(ApplianceError) as caught:
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    message = caught.value.message
    assert "is a named pipe" in message and "pipe-b" not in message and "[(" not in message
    assert not (tmp_path / "restored").exists()
    assert not (tmp_path / "restored.restoring").exists()


def test_restore_into_a_home_that_is_its_own_file_system(appliance, admin_session,
                                                         tmp_path: Path) -> None:
    """A home on its own partition holds `lost+found` and is a mount point, which no rename
    can replace: `init` takes such a home, and so must a restore (formerly "is not empty",
    and past that a rename onto the mount point failed)."""
    import os
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    target = tmp_path / "data"
    (target / "lost+found").mkdir(parents=True)
    os.chmod(target, 0o755)
    backup.restore_backup(bk, target, ADMIN, PASSWORD)
    assert sorted(p.name for p in target.iterdir()) == ["appliance.db", "config.json",
                                                         "keys", "lost+found"]
    assert (target.stat().st_mode & 0o777) == 0o700
    assert not (tmp_path / "data.restoring").exists()
    with Appliance.open(target) as app2:
        last = app2.conn.execute("SELECT action FROM audit_view ORDER BY seq DESC LIMIT 1")
        assert last.fetchone()[0] == "backup.restore"


def test_a_restore_killed_while_moving_its_copy_up_can_be_run_again(
        appliance, admin_session, tmp_path: Path) -> None:
    """A restore into an existing home moves its verified copy up, the database last. Killed
    (kill -9) after some entries were moved, the home held them beside the staged copy and
    no database: no appliance, but a restore run again said "is not empty" and only a
    hand clean-up (of a staged copy holding the private key) let it go ahead."""
    import os
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    target = tmp_path / "data"
    (target / "lost+found").mkdir(parents=True)
    backup.restore_backup(bk, target, ADMIN, PASSWORD)
    # The state a kill after moving config.json and keys leaves: the rest still staged.
    staged = target / backup.STAGED
    staged.mkdir()
    for name in ("appliance.db", "store"):
        if (target / name).exists():
            os.rename(target / name, staged / name)
    with pytest.raises(ApplianceError, match="no appliance"):
        Appliance.open(target)
    backup.check_restore_target(target)
    backup.restore_backup(bk, target, ADMIN, PASSWORD)
    assert sorted(p.name for p in target.iterdir()) == ["appliance.db", "config.json",
                                                         "keys", "lost+found"]
    with Appliance.open(target) as app2:
        last = app2.conn.execute("SELECT action FROM audit_view ORDER BY seq DESC LIMIT 1")
        assert last.fetchone()[0] == "backup.restore"
    # Only what a restore moves up is taken as its own: anything else still refuses.
    staged.mkdir()
    (target / "appliance.db").rename(staged / "appliance.db")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        backup.restore_backup(bk, target, ADMIN, PASSWORD)
    assert (target / "notes.txt").read_text() == "mine"


_FULL_DISK_CHILD = """
import json, os, subprocess, sys, traceback
from pathlib import Path
from appliance.errors import ApplianceError
from appliance.services import backup
bk, mnt = Path(sys.argv[1]), Path(sys.argv[2])
for kib in range(16, 640, 8):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mnt)], check=True)
    try:
        backup.restore_backup(bk, mnt / "home", sys.argv[3], sys.argv[4])
        out = {"kib": kib, "ok": True}
    except ApplianceError as exc:
        out = {"kib": kib, "ok": False, "error": exc.message}
    except Exception as exc:
        out = {"kib": kib, "ok": False, "raw": repr(exc), "tb": traceback.format_exc()}
    out["left"] = sorted(os.listdir(mnt))
    print(json.dumps(out), flush=True)
    subprocess.run(["umount", str(mnt)], check=True)
"""


def test_a_restore_onto_a_disk_that_fills_up_is_one_line_and_leaves_nothing(
        appliance, admin_session, tmp_path: Path) -> None:
    """The space check counts the backup's bytes; the restored copy then grows (SQLite's
    -wal and -shm when it is opened, the login and the restore recorded). On a disk with
    room for the copy but not for that, opening it raised a raw `sqlite3.OperationalError:
    disk I/O error` traceback. Every size of disk must be a restore or one line, nothing
    left."""
    import subprocess
    import sys
    _events(appliance, 200)
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = subprocess.run([*private_mounts(), sys.executable, "-c", _FULL_DISK_CHILD, str(bk),
                          str(mnt), ADMIN, PASSWORD], capture_output=True, text=True,
                         timeout=300, env={**os.environ,
                                           "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(r["ok"] for r in results) and not results[0]["ok"]
    for r in results:
        assert "raw" not in r, r.get("tb")
        assert r["left"] == (["home"] if r["ok"] else []), r


def test_a_failed_restore_into_an_existing_home_leaves_it_as_it_was(
        appliance, admin_session, tmp_path: Path) -> None:
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    _edit_config(bk, "approval", "required_admin_signatures", 0)
    _reseal(bk)
    target = tmp_path / "data"
    (target / "lost+found").mkdir(parents=True)
    with pytest.raises(IntegrityError, match="do not load"):
        backup.restore_backup(bk, target, ADMIN, PASSWORD)
    assert [p.name for p in target.iterdir()] == ["lost+found"]


def test_a_restore_sets_the_private_modes_whatever_the_backup_reads_as(
        appliance, admin_session, tmp_path: Path) -> None:
    """A backup kept on a FAT stick or a share reads as 0644/0755: the restored private key
    was 0644 and keys/ 0755. The restore sets init's modes, and a backup is written so."""
    import os
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(bk / "keys") == 0o700 and mode(bk / "keys" / "appliance-signing.pem") == 0o600
    for path in (bk, bk / "keys"):
        os.chmod(path, 0o755)
    for path in (*(bk / "keys").iterdir(), bk / "appliance.db"):
        os.chmod(path, 0o644)
    home = tmp_path / "restored"
    backup.restore_backup(bk, home, ADMIN, PASSWORD)
    assert mode(home) == 0o700 and mode(home / "keys") == 0o700
    assert mode(home / "keys" / "appliance-signing.pem") == 0o600
    assert mode(home / "appliance.db") == 0o600


def test_a_backup_without_its_keys_is_still_told_plainly(appliance, admin_session,
                                                         tmp_path: Path) -> None:
    import shutil
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    shutil.rmtree(bk / "keys")
    with pytest.raises(InvalidInput, match="is not an appliance backup .*no public key"):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()


def test_the_inventorys_ssh_keys_are_backed_up_and_restored_private(
        appliance, admin_session, make_user, tmp_path: Path) -> None:
    """A host added with --key runs playbooks with the copy in keys/provision/; the backup
    left it out, so a restored appliance named a key it did not have. The host names the
    key by its path in the old home: restored into another home, it is pointed at the
    restored copy, and the restore's event says so."""
    import os
    import subprocess

    from appliance.provision.inventory import Host, load_hosts
    from appliance.services import provision_inventory
    for name in ("client", "hostkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(tmp_path / name)], check=True)
    provision_inventory.add_host(
        appliance, make_user(["it"]), Host("gpu-2", address="10.213.7.2", user="provision"),
        key_source=tmp_path / "client", host_key_file=tmp_path / "hostkey.pub")
    stored = Path(next(h for h in load_hosts(appliance.conn) if h.name == "gpu-2").key_file)
    bk = backup.create_backup(appliance, admin_session, tmp_path / "bk").path
    assert f"keys/provision/{stored.name}" in backup.verify_backup(bk).files
    os.chmod(bk / "keys" / "provision" / stored.name, 0o644)  # as a FAT stick shows it
    home = appliance.layout.root.with_name("restored")
    backup.restore_backup(bk, home, ADMIN, PASSWORD)
    restored = home / "keys" / "provision" / stored.name
    assert restored.read_bytes() == (tmp_path / "client").read_bytes()
    assert restored.stat().st_mode & 0o777 == 0o600
    with Appliance.open(home) as app2:
        host = next(h for h in load_hosts(app2.conn) if h.name == "gpu-2")
        assert Path(host.key_file) == restored != stored
        [event] = [json.loads(b) for (b,) in app2.conn.execute(
            "SELECT body FROM audit_view WHERE action = 'backup.restore'")]
        assert event["details"]["ssh_keys_moved"] == {"gpu-2": str(restored)}


# --- the content store and the releases ----------------------------------------------------

@pytest.fixture(scope="session")
def media(tmp_path_factory):
    from tests.updates.kit import build_media
    return build_media(tmp_path_factory.getbasetemp())


@pytest.fixture
def serving(appliance, admin_session, make_user, media) -> Appliance:
    """An appliance serving demo-clinical/2 and keeping demo-clinical/1 for rollback."""
    import dataclasses

    from appliance.services import updates
    from appliance.settings import EvaluationGates
    from appliance.updates.install import Edges
    from appliance.updates.restart import RecordingRestarter
    from tests.updates.kit import GATES, approve, h100, trust_and_import
    appliance.settings = dataclasses.replace(appliance.settings,
                                             evaluation=EvaluationGates(**GATES))
    refs = trust_and_import(appliance, make_user(["security"], "sam"),
                            make_user(["it"], "ivan"), media, 1, 2)
    for ref in refs:
        approve(appliance, admin_session, ref)
        result = updates.install(appliance, admin_session, ref,
                                 Edges(source=h100(), restarter=RecordingRestarter()))
        assert result.outcome == "activated"
    return appliance


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")}


def _objects(bk: Path) -> list[Path]:
    return sorted((bk / "store" / "sha256").glob("*/*"))


def test_a_restore_onto_an_empty_disk_serves_the_current_and_kept_releases(
        serving, admin_session, tmp_path: Path) -> None:
    """Formerly a backup held no store: the restored appliance's `current` pointed nowhere
    (update status INCONSISTENT) and the bundles could not be imported again (a replay)."""
    import os

    from appliance.bundle.store import ContentStore
    from appliance.services import auth, updates
    from tests.conftest import ADMIN, PASSWORD
    app = serving
    result = backup.create_backup(app, admin_session, tmp_path / "bk")
    on_disk = ContentStore(app.layout.store).objects_on_disk()
    assert result.objects == len(on_disk) > 12
    assert result.object_bytes == sum(size for _, size in on_disk)
    assert {p.name for p in _objects(result.path)} == {d for d, _ in on_disk}
    assert not (result.path / "releases").exists()   # laid out again, not copied
    home = tmp_path / "new-disk" / "home"
    home.parent.mkdir()
    report = backup.restore_backup(result.path, home, ADMIN, PASSWORD)
    assert report.releases == ("demo-clinical/1", "demo-clinical/2")
    assert report.current == "demo-clinical/2"
    assert os.readlink(home / "releases" / "current") == "demo-clinical/2"
    assert _tree(home / "releases") == _tree(app.layout.releases)   # serving.json too
    store = ContentStore(home / "store")
    for path in (home / "releases" / "demo-clinical").rglob("*"):
        if path.is_file() and path.name != "serving.json":   # hard links, as installed
            assert os.stat(path).st_ino == os.stat(store.path_of(
                _sha(path))).st_ino
            assert path.stat().st_mode & 0o777 == 0o444
    with Appliance.open(home) as app2:
        status = updates.status(app2, auth.login(app2, ADMIN, PASSWORD), deep=True)
        assert status["consistent"] is True and status["problems"] == []
        [restored] = [json.loads(b) for (b,) in app2.conn.execute(
            "SELECT body FROM audit_view WHERE action = 'backup.restore'")]
        assert restored["details"]["releases"] == ["demo-clinical/1", "demo-clinical/2"]
        assert restored["details"]["current"] == "demo-clinical/2"


def _sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("tamper", ["altered", "resealed", "removed"])
def test_a_store_object_altered_or_missing_is_refused_at_restore(
        serving, admin_session, tmp_path: Path, tamper: str) -> None:
    """The manifest finds a changed object; one changed and signed again with the key the
    backup holds is not named by its SHA-256; one left out is one a release needs."""
    import os
    bk = backup.create_backup(serving, admin_session, tmp_path / "bk").path
    obj = _objects(bk)[0]
    os.chmod(obj, 0o644)
    if tamper == "removed":
        obj.unlink()
        if not any(obj.parent.iterdir()):
            obj.parent.rmdir()
    else:
        obj.write_bytes(obj.read_bytes() + b"\x00")
    expected = {"altered": f"store/sha256/.* in backup {bk} was altered",
                "resealed": "is not a content-store object named by its SHA-256",
                "removed": f"lacks content-store object {obj.name[:16]}... that release"}
    if tamper == "altered":
        with pytest.raises(IntegrityError, match=expected[tamper]):
            backup.verify_backup(bk)
    else:
        _reseal(bk)
    with pytest.raises(IntegrityError, match=expected[tamper]):
        backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert not (tmp_path / "restored").exists()
    assert not (tmp_path / "restored.restoring").exists()


def test_a_damaged_store_object_makes_no_backup_and_is_recorded(
        serving, admin_session, tmp_path: Path) -> None:
    import os

    from appliance.bundle.store import ContentStore
    [(digest, _), *_] = sorted(ContentStore(serving.layout.store).objects_on_disk())
    path = ContentStore(serving.layout.store).path_of(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    with pytest.raises(IntegrityError, match=f"object {digest[:16]}... is damaged"):
        backup.create_backup(serving, admin_session, tmp_path / "bk")
    assert list(tmp_path.glob("*bk*")) == []
    [start, (action, outcome, error)] = _backup_events(serving)
    assert start[0] == "backup.start" and (action, outcome) == ("backup.create", "failure")
    assert "is damaged" in error


def test_media_or_a_disk_too_small_is_refused_before_copying_and_keeps_nothing(
        serving, admin_session, tmp_path: Path) -> None:
    """Both ends on a real 64 KiB tmpfs (in a private mount namespace), through the CLI:
    one line each, a non-zero exit, the refused backup recorded, nothing left on either."""
    import os
    import subprocess
    import sys
    bk = backup.create_backup(serving, admin_session, tmp_path / "bk").path
    usb, disk, out = tmp_path / "usb", tmp_path / "disk", tmp_path / "out"
    for d in (usb, disk, out):
        d.mkdir()
    script = "\n".join([
        'mount -t tmpfs -o size=64k tmpfs "$USB"', 'mount -t tmpfs -o size=64k tmpfs "$DISK"',
        'printf "%s\\n" "$PW" | "$PY" -m appliance backup create --to "$USB/bk" --user alice '
        '--password-stdin >"$OUT/create.out" 2>"$OUT/create.err" || echo $? >"$OUT/create.rc"',
        'printf "%s\\n" "$PW" | "$PY" -m appliance --home "$DISK/home" backup restore "$BK" '
        '--user alice --password-stdin >"$OUT/restore.out" 2>"$OUT/restore.err" '
        '|| echo $? >"$OUT/restore.rc"',
        'ls -A "$USB" >"$OUT/usb.ls"', 'ls -A "$DISK" >"$OUT/disk.ls"'])
    from tests.conftest import PASSWORD
    env = {**os.environ, "USB": str(usb), "DISK": str(disk), "OUT": str(out), "BK": str(bk),
           "PW": PASSWORD, "PY": sys.executable, "APPLIANCE_HOME": str(serving.layout.root),
           "PYTHONPATH": str(Path(__file__).parents[2])}
    ns = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    done = subprocess.run(ns + ["sh", "-ec", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    read = lambda name: (out / name).read_text()  # noqa: E731
    assert read("create.rc").strip() != "" and read("restore.rc").strip() != ""
    create_err, restore_err = read("create.err"), read("restore.err")
    assert create_err.count("\n") == 1 and restore_err.count("\n") == 1
    assert create_err.startswith(f"error: could not write the backup to {usb}/bk: not enough "
                                 "space for the backup (needs ")
    assert restore_err.startswith(f"error: not enough space to restore into {disk}/home "
                                  "(needs ")
    assert "nothing was restored" in restore_err
    assert read("usb.ls") == "" and read("disk.ls") == ""
    assert _backup_events(serving)[-1][:2] == ("backup.create", "failure")


def test_a_backup_waits_for_no_install_it_is_refused_while_one_runs(
        serving, admin_session, tmp_path: Path) -> None:
    """The records and the objects copied must agree: a running install (its lock held) is
    refused before anything is recorded."""
    from appliance.updates.releases import InstallLock
    lock = InstallLock(serving.layout.releases)
    assert lock.acquire()
    try:
        with pytest.raises(InvalidInput, match="an install, rollback or recovery is running"):
            backup.create_backup(serving, admin_session, tmp_path / "bk")
    finally:
        lock.release()
    assert _backup_events(serving) == [] and not (tmp_path / "bk").exists()
    assert backup.create_backup(serving, admin_session, tmp_path / "bk").objects > 0


def test_a_backup_running_is_named_to_whoever_its_locks_turn_away(
        serving, admin_session, tmp_path: Path) -> None:
    """A backup holds the install lock: a second backup (a scheduled one beside a manual
    one) or an install meanwhile was told "an install, rollback or recovery is running",
    sending IT to look for an install that was not there."""
    from appliance.backup_store import still
    from appliance.errors import UpdateRefused
    from appliance.services import updates
    from appliance.updates.install import Edges
    from appliance.updates.restart import RecordingRestarter
    from tests.updates.kit import h100, sign_req
    ref = serving.conn.execute("SELECT bundle_id FROM releases WHERE status = 'kept'"
                               ).fetchone()[0]
    with still(serving):   # what a running backup holds
        with pytest.raises(InvalidInput, match="another backup"):
            backup.create_backup(serving, admin_session, tmp_path / "bk")
        with pytest.raises(UpdateRefused, match="or a backup"):
            updates.rollback(serving, admin_session, str(ref), sign_req(ADMIN),
                             Edges(source=h100(), restarter=RecordingRestarter()))
    assert _backup_events(serving) == [] and not (tmp_path / "bk").exists()


def test_a_backup_made_before_backups_held_the_store_restores_the_records_only(
        serving, admin_session, tmp_path: Path) -> None:
    """Its manifest has no store_objects: the records come back, no release is laid out."""
    import shutil
    bk = backup.create_backup(serving, admin_session, tmp_path / "bk").path
    shutil.rmtree(bk / "store")
    (bk / MANIFEST).unlink()
    seal(bk, SigningKey.load(bk / "keys" / "appliance-signing.pem"), {})
    report = backup.restore_backup(bk, tmp_path / "restored", ADMIN, PASSWORD)
    assert report.ok and report.releases == () and report.current is None
    assert not (tmp_path / "restored" / "releases").exists()


_key_copies: list[Path] = []  # the audit hook below watches only while a test fills it


def _watch_key_copies(event: str, args: tuple) -> None:
    if event == "shutil.copyfile" and _key_copies and str(args[1]).endswith(
            "/keys/appliance-signing.pem"):
        _key_copies.append(Path(args[1]))
        for d in (Path(args[1]).parent, Path(args[1]).parent.parent):
            _key_copies.append((d, oct(os.stat(d).st_mode & 0o777)))


def test_a_backup_copies_the_key_only_into_directories_private_from_their_creation(
        appliance, admin_session, tmp_path: Path) -> None:
    """Under a permissive umask, keys/ in the half-built copy was 0777 while the signing
    key was copied into it (its file made 0666 before its mode was set): another account
    could open it meanwhile. Watched as it happens, through Python's audit hooks."""
    import sys
    sys.addaudithook(_watch_key_copies)
    old = os.umask(0)
    _key_copies.append(Path("watching"))
    try:
        result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    finally:
        os.umask(old)
        seen, _key_copies[:] = _key_copies[1:], []
    assert len(seen) == 3, seen
    assert [mode for _, mode in seen[1:]] == ["0o700", "0o700"]
    assert oct(os.stat(result.path / "keys").st_mode & 0o777) == "0o700"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_restore_refuses_an_empty_home_another_account_owns(appliance, admin_session,
                                                            tmp_path: Path) -> None:
    """Its owner keeps the right to rename what is inside: the restored key and database."""
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(InvalidInput, match=r"belongs to another account \(uid 65534\)"):
        backup.restore_backup(result.path, theirs, ADMIN, PASSWORD)
    assert list(theirs.iterdir()) == []
