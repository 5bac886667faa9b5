"""Anchors on external media: written whole or not at all, and the trail says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.audit.checkpoint import latest, read_anchor
from appliance.audit.verify import verify_trail
from appliance.errors import ApplianceError, InvalidInput
from appliance.services import audit


def anchor_events(app) -> list[dict]:
    rows = app.conn.execute("SELECT body FROM audit_view WHERE action = 'audit.anchor' "
                            "ORDER BY seq").fetchall()
    return [json.loads(body) for (body,) in rows]


def test_an_anchor_names_a_committed_checkpoint_and_is_recorded(appliance, admin_session,
                                                                tmp_path: Path):
    media = tmp_path / "usb"
    media.mkdir()
    path = audit.anchor(appliance, admin_session, media)
    anchor = read_anchor(path)
    cp = latest(appliance.conn)
    assert anchor.tree_size == cp.tree_size and anchor.body["head_hash"] == cp.head_hash
    assert path.name == f"audit-anchor-{appliance.appliance_id[:8]}-{cp.tree_size:09d}.json"
    [event] = anchor_events(appliance)
    assert event["outcome"] == "success" and event["seq"] == cp.tree_size + 1
    assert event["details"] == {"to": str(path), "tree_size": cp.tree_size,
                                "head_hash": cp.head_hash}
    assert [p.name for p in media.iterdir()] == [path.name]  # no temporary file left
    assert verify_trail(appliance.conn, appliance.key.public, anchor).ok


def test_a_missing_directory_is_refused_before_anything_is_recorded(appliance, admin_session,
                                                                     tmp_path: Path):
    with pytest.raises(InvalidInput, match="does not exist"):
        audit.anchor(appliance, admin_session, tmp_path / "not-mounted" / "anchor.json")
    assert anchor_events(appliance) == []


def test_media_that_cannot_take_the_file_is_a_recorded_failure(appliance, admin_session):
    """/proc takes no new files, for root too: a real write failure, not a stand-in."""
    with pytest.raises(ApplianceError, match=r"^could not write the anchor to /proc/") as err:
        audit.anchor(appliance, admin_session, Path("/proc"))
    assert err.value.hint == "check that the external media is mounted, writable and not full"
    [event] = anchor_events(appliance)
    assert event["outcome"] == "failure" and event["details"]["error"]
    assert event["details"]["to"].startswith("/proc/audit-anchor-")
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_an_anchor_that_cannot_be_put_in_place_is_a_recorded_failure(appliance, admin_session,
                                                                     tmp_path: Path):
    """A directory already holds the anchor's name: the rename fails for real after the
    event committed, so the failure follows it in the trail and no staged file is left."""
    media = tmp_path / "usb"
    media.mkdir()
    head = appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    # The anchor names the checkpoint signed at the current head.
    taken = media / f"audit-anchor-{appliance.appliance_id[:8]}-{head:09d}.json"
    taken.mkdir()
    with pytest.raises(ApplianceError, match=r"^could not put the anchor in place at "):
        audit.anchor(appliance, admin_session, media)
    assert [e["outcome"] for e in anchor_events(appliance)] == ["success", "failure"]
    assert [p.name for p in media.iterdir()] == [taken.name] and taken.is_dir()
    assert verify_trail(appliance.conn, appliance.key.public).ok


def test_links_on_the_media_are_never_followed_off_it(appliance, admin_session, tmp_path):
    """A stick's own `exports -> /var/lib/appliance/keys` took an export or an anchor
    there, and a backup to a dangling link built a whole copy (the key too) first."""
    from appliance.services import audit_export, backup

    elsewhere, media = tmp_path / "elsewhere", tmp_path / "media"
    elsewhere.mkdir()
    media.mkdir()
    (media / "exports").symlink_to(elsewhere)
    (media / "new.json").symlink_to(elsewhere / "new.json")
    (media / "bk").symlink_to(elsewhere / "bk")
    for write in (lambda to: audit_export.export_trail(appliance, admin_session, "csv", to),
                  lambda to: audit.anchor(appliance, admin_session, to)):
        for to in (media / "exports", media / "new.json"):
            with pytest.raises(InvalidInput, match="is a symbolic link|already exists"):
                write(to)
    with pytest.raises(InvalidInput, match="already exists"):
        backup.create_backup(appliance, admin_session, media / "bk")
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in media.iterdir()) == ["bk", "exports", "new.json"]
