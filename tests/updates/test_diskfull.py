"""A full disk during layout is refused cleanly, and releases/ on another file system than the
content store falls back to copying and says so. `releases/` is a tiny tmpfs mounted in a
private mount namespace (root: `unshare -m`; others: a user namespace), so the mount
vanishes with the process and the content store stays on the ordinary disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.services import updates
from tests.mounts import private_mounts
from tests.updates.kit import H100_READING, approve, trust_and_import

CHILD = Path(__file__).with_name("install_child.py")
ROOT = Path(__file__).parents[2]


@pytest.fixture
def approved(app, admin_session, security, itop, media, home):
    [ref] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref)
    size = app.conn.execute("SELECT size_bytes FROM bundles").fetchone()[0]
    app.layout.releases.mkdir(parents=True, exist_ok=True)
    app.close()
    return ref, size


def in_tmpfs(home: Path, ref: str, mounts: list[str]) -> list[dict]:
    """For each tmpfs option string: mount it on releases/, install once, unmount."""
    rel = home / "releases"
    lines = []
    for opts in mounts:
        lines += [f'mount -t tmpfs -o {opts} tmpfs "$REL"',
                  f'"$PY" "$CHILD" "$HOME_DIR" {ref} "$READING"',
                  'umount "$REL"']
    ns = private_mounts()
    env = {**os.environ, "REL": str(rel), "PY": sys.executable, "CHILD": str(CHILD),
           "HOME_DIR": str(home), "READING": str(H100_READING), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(ns + ["sh", "-ec", "\n".join(lines)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_disk_full_is_refused_cleanly_and_a_copy_across_file_systems_is_named(
        home, approved) -> None:
    ref, size = approved
    assert size > 4096
    too_small, few_inodes, roomy = in_tmpfs(home, ref, [
        "size=4k",                     # refused before writing: not enough free space
        "size=1m,nr_inodes=8",         # space enough, but inodes run out mid-layout: ENOSPC
        "size=16m"])                   # room enough: installs, by copying
    assert too_small["ok"] is False and too_small["type"] == "UpdateRefused"
    assert too_small["error"].startswith("not enough space for the release in ")
    assert "on another file system than the content store" in too_small["error"]
    assert few_inodes["ok"] is False and few_inodes["type"] == "UpdateRefused"
    assert few_inodes["error"] == f"the disk holding {home / 'releases'} is full while laying " \
                                  "out release demo-clinical/1"
    for refused in (too_small, few_inodes):
        assert "\n" not in refused["error"]
        assert refused["left"] == [] and refused["current"] is None   # no half-written state
        assert refused["state"] == "APPROVED" and refused["journal"] == ["refused", 0]
        assert refused["problems"] == []
        assert refused["undone"][-1] == "install refused before the switch: " + refused["error"]
    assert roomy["ok"] is True and roomy["outcome"] == "activated"
    assert roomy["placement"]["cross_filesystem"] is True
    assert roomy["placement"]["hardlink"] == 0
    assert roomy["placement"]["copy"] + roomy["placement"]["reflink"] == 12
    assert roomy["current"] == "demo-clinical/1" and roomy["problems"] == []


def test_a_stray_release_directory_is_swept_before_install(app, admin_session, security, itop,
                                                           media, home) -> None:
    [ref] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref)
    from appliance.updates.install import Edges, release_dirs
    from tests.updates.kit import h100
    blocker = release_dirs(app).path_of("demo-clinical/1")
    blocker.mkdir(parents=True)
    (blocker / "stray").write_text("x")
    # Recovery at the start sweeps what no record owns, so the install goes through.
    result = updates.install(app, admin_session, ref, Edges(source=h100()))
    assert result.outcome == "activated"
    cleanup = [json.loads(r[0]) for r in app.conn.execute(
        "SELECT body FROM audit_view WHERE action = 'update.cleanup'")]
    assert cleanup and "demo-clinical/1" in cleanup[0]["details"]["removed"]
