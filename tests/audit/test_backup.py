"""11.10(c): backups restore exactly the records, proven by the audit chain."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from appliance.audit.events import Actor, Event
from appliance.context import Appliance
from appliance.errors import (
    AlreadyInitialised,
    ApplianceError,
    IntegrityError,
    InvalidInput,
    PermissionDenied,
)
from appliance.services import backup


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
    assert report.ok and report.events_checked == result.events
    restored = tmp_path / "restored"
    backup.restore_backup(result.path, restored)
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


def test_tampered_backup_is_detected_and_not_restored(appliance, admin_session,
                                                      tmp_path: Path) -> None:
    _events(appliance, 5)
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    conn = sqlite3.connect(result.path / "appliance.db")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.execute("DELETE FROM audit_events WHERE seq > 3")
    conn.commit()
    conn.close()
    assert not backup.verify_backup(result.path).ok
    with pytest.raises(IntegrityError):
        backup.restore_backup(result.path, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_never_overwrites_an_appliance(appliance, admin_session, tmp_path) -> None:
    result = backup.create_backup(appliance, admin_session, tmp_path / "bk")
    with pytest.raises(AlreadyInitialised):
        backup.restore_backup(result.path, appliance.layout.root)
    with pytest.raises(InvalidInput):
        backup.create_backup(appliance, admin_session, tmp_path / "bk")


def test_only_it_or_security_may_back_up(appliance, make_user, tmp_path) -> None:
    with pytest.raises(PermissionDenied):
        backup.create_backup(appliance, make_user(["ml"]), tmp_path / "bk")
    assert backup.create_backup(appliance, make_user(["it"]), tmp_path / "bk2").events > 0


def _backup_events(app: Appliance) -> list[tuple[str, str]]:
    rows = app.conn.execute("SELECT body FROM audit_view WHERE action = 'backup.create' "
                            "ORDER BY seq").fetchall()
    return [(json.loads(b)["outcome"], json.loads(b)["details"].get("error", ""))
            for (b,) in rows]


def test_backup_to_media_that_is_not_mounted_is_refused_and_not_recorded(
        appliance, admin_session, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        backup.create_backup(appliance, admin_session, tmp_path / "usb" / "bk")
    assert not (tmp_path / "usb").exists() and _backup_events(appliance) == []


def test_backup_that_cannot_be_written_is_a_recorded_failure(appliance, admin_session
                                                             ) -> None:
    """/proc takes no new directories, for root too: a real write failure."""
    with pytest.raises(ApplianceError, match=r"^could not write the backup to /proc/bk: ") as e:
        backup.create_backup(appliance, admin_session, Path("/proc/bk"))
    assert e.value.hint == "check that the backup media is mounted, writable and not full"
    [(intent, _), (outcome, error)] = _backup_events(appliance)
    assert (intent, outcome) == ("success", "failure") and error
