"""What hospital IT meets on a real disk: `current` that is no longer a link, a disk that
fills at the switch or under the database mid-install, a lock held by another installer.
Each is refused or stopped in one recorded line that names the bundle digest, and leaves
nothing half-done that `update status` cannot finish or undo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from appliance.bundle.store import ContentStore
from appliance.errors import IntegrityError, UpdateRefused
from appliance.services import updates
from appliance.text import shown
from appliance.updates.lifecycle import State, find_bundle
from appliance.updates.recovery import consistency
from appliance.updates.releases import InstallLock
from tests.conftest import ADMIN
from tests.mounts import private_mounts
from tests.updates.kit import H100_READING, approve, h100, sign_req, trust_and_import
from tests.updates.test_diskfull import CHILD, ROOT, in_tmpfs
from tests.updates.test_install import edges, install
from tests.updates.test_lifecycle import events


@pytest.fixture
def v1_v2(app, admin_session, security, itop, media):
    return trust_and_import(app, security, itop, media, 1, 2)


def _break(current, kind: str) -> None:
    os.unlink(current)
    if kind == "directory":
        current.mkdir()
        (current / "model.safetensors").write_text("someone's copy")
    else:
        current.write_text("demo-clinical/1\n")


def _mend(current, kind: str, target: str) -> None:
    assert {"directory": current.is_dir, "file": current.is_file,
            "link": current.is_symlink}[kind]()                          # not touched
    (shutil.rmtree if kind == "directory" else os.unlink)(current)
    os.symlink(target, current)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_current_that_is_not_a_link_is_reported_and_refused(app, admin_session, v1_v2,
                                                            kind) -> None:
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    approve(app, admin_session, ref2)
    current = app.layout.releases / "current"
    problem = f"{current} is a {kind} where the link to the running release belongs"

    def refused(step: str, ref: str, call) -> None:
        with pytest.raises(UpdateRefused) as err:
            call()
        assert err.value.message == problem and "\n" not in err.value.message
        assert "nothing was switched" in err.value.hint
        event = events(app, "update.refused")[-1]
        assert event["details"]["step"] == step and event["reason"] == problem
        assert event["target"]["digest"] == find_bundle(app.conn, ref).digest
        assert app.conn.execute("SELECT COUNT(*) FROM install_journal WHERE open = 1"
                                ).fetchone()[0] == 0

    _break(current, kind)
    st = updates.status(app, admin_session)           # reported, not a traceback
    assert st["consistent"] is False and st["problems"] == [problem]
    assert st["current"] is None
    refused("install", ref2, lambda: updates.install(app, admin_session, ref2, edges()))
    assert find_bundle(app.conn, ref2).state == State.APPROVED
    _mend(current, kind, "demo-clinical/1")
    assert updates.status(app, admin_session)["consistent"] is True
    assert updates.install(app, admin_session, ref2, edges()).outcome == "activated"

    _break(current, kind)
    refused("rollback", ref1, lambda: updates.rollback(app, admin_session, ref1,
                                                       sign_req(ADMIN), edges()))
    assert find_bundle(app.conn, ref1).state == State.APPROVED
    assert find_bundle(app.conn, ref2).state == State.ACTIVE
    _mend(current, kind, "demo-clinical/2")
    assert consistency(app) == []


def _tree(root) -> dict[str, str]:
    """Every path under `root` and what it is (a link's target), to see nothing moved."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else
            "dir" if p.is_dir() else p.read_bytes().hex() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("odd", ["outside", "outside-relative", "missing", "forged",
                                 "unknown"])
def test_a_current_link_no_install_made_is_refused(app, admin_session, v1_v2, tmp_path,
                                                   odd) -> None:
    """A `current` link leading out of releases/, to no release directory, or to one the
    records do not hold was switched over by the next install or rollback (and the sweep
    before it removed the unknown directory): what it showed was lost, unrecorded."""
    ref1, ref2 = v1_v2
    releases = app.layout.releases
    current = releases / "current"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "serving.json").write_text("{}")
    target, says = {
        "outside": (str(elsewhere), f"outside {releases}"),
        "outside-relative": (os.path.relpath(elsewhere, releases), f"outside {releases}"),
        "missing": ("demo-clinical/9", "which is no release directory"),
        "forged": ("x\nerror: none (all is well)", "which is no release directory"),
        "unknown": ("demo-clinical/7", "a release the records do not hold"),
    }[odd]
    message = f"{current} points to {shown(target)}, {says}"

    def refused(step: str, ref: str, call) -> None:
        if odd == "unknown":
            shutil.copytree(releases / "demo-clinical/1", releases / "demo-clinical/7",
                            symlinks=True, dirs_exist_ok=True)
        os.unlink(current)
        os.symlink(target, current)
        before, outside = _tree(releases), _tree(elsewhere)
        states = [find_bundle(app.conn, r).state for r in (ref1, ref2)]
        with pytest.raises(UpdateRefused) as err:
            call()
        assert err.value.message == message and "\n" not in message
        assert "nothing was switched" in err.value.hint
        assert "appliance update status --deep" in err.value.hint
        event = events(app, "update.refused")[-1]
        assert event["details"]["step"] == step and event["reason"] == message
        assert event["outcome"] == "failure"
        assert event["target"]["digest"] == find_bundle(app.conn, ref).digest
        assert [find_bundle(app.conn, r).state for r in (ref1, ref2)] == states
        assert app.conn.execute("SELECT COUNT(*) FROM install_journal WHERE open = 1"
                                ).fetchone()[0] == 0
        assert _tree(releases) == before and _tree(elsewhere) == outside
        assert updates.status(app, admin_session)["consistent"] is False
        assert _tree(releases) == before            # nor does `update status` move it

    install(app, admin_session, ref1)
    approve(app, admin_session, ref2)
    refused("install", ref2, lambda: updates.install(app, admin_session, ref2, edges()))
    _mend(current, "link", "demo-clinical/1")
    assert updates.install(app, admin_session, ref2, edges()).outcome == "activated"
    refused("rollback", ref1, lambda: updates.rollback(app, admin_session, ref1,
                                                       sign_req(ADMIN), edges()))
    _mend(current, "link", "demo-clinical/2")
    assert updates.status(app, admin_session)["consistent"] is True


def test_disk_full_at_the_switch_is_refused_and_undone(app, admin_session, security, itop,
                                                      media, home) -> None:
    """releases/ on a tmpfs with a few inodes: at one count the layout fits and the new
    `current` link does not. Every count ends cleanly refused, up to the first that has
    room enough and activates (the children share one home, so the rest find it ACTIVE)."""
    [ref] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref)
    app.layout.releases.mkdir(parents=True, exist_ok=True)
    app.close()
    counts = range(20, 28)
    outs = in_tmpfs(home, ref, [f"size=1m,nr_inodes={n}" for n in counts])
    assert len(outs) == len(counts)          # every child answered: no traceback
    at_switch = [o for o in outs if o["ok"] is False and "could not switch" in o["error"]]
    assert at_switch, [o.get("error") for o in outs]
    for out in outs:
        if out["ok"]:
            assert out["outcome"] == "activated" and out["problems"] == []
            break
        assert out["type"] == "UpdateRefused" and "\n" not in out["error"]
        assert out["left"] == [] and out["current"] is None
        assert out["state"] == "APPROVED" and out["journal"] == ["refused", 0]
        assert out["problems"] == []
        assert out["undone"][-1] == "install refused before the switch: " + out["error"]
    assert at_switch[0]["error"] == f"the disk holding {home / 'releases'} is full: could " \
                                    "not switch to release demo-clinical/1"
    assert at_switch[0]["hint"] == "free disk space and try again; nothing was switched"


def test_database_full_mid_install_says_where_it_stopped_and_status_finishes_it(
        app, admin_session, security, itop, media, home, tmp_path) -> None:
    """The whole home on a tmpfs that fills after the health checks passed: the release is
    switched, the database cannot say ACTIVE. The error says so (not "nothing was
    changed") and names `update status`, which finishes the install once there is room."""
    [ref] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref)
    app.close()
    mnt = tmp_path / "disk"
    mnt.mkdir()
    script = "\n".join(['mount -t tmpfs -o size=64m tmpfs "$MNT"', 'cp -a "$SRC" "$MNT/h"',
                        '"$PY" "$CHILD" "$MNT/h" "$REF" "$READING" healthy:committed',
                        'umount "$MNT"'])
    ns = private_mounts()
    env = {**os.environ, "MNT": str(mnt), "SRC": str(home), "PY": sys.executable,
           "CHILD": str(CHILD), "REF": ref, "READING": str(H100_READING),
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run(ns + ["sh", "-ec", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [out] = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert out["ok"] is False and out["type"] == "AuditFailure"
    assert out["current_at_failure"] == "demo-clinical/1"      # it was switched
    assert out["error"].endswith(f": the install of {ref} stopped at step healthy")
    assert "nothing was changed" not in out["hint"] and "\n" not in out["error"]
    assert out["hint"] == ("free disk space, then run `appliance update status`: it "
                           "finishes or undoes the install")
    assert out["status"]["resolved"]["decision"] == "completed"
    assert out["status"]["consistent"] is True
    assert out["status"]["current"] == "demo-clinical/1"


def test_a_held_install_lock_is_refused_with_the_bundle_digest(app, admin_session,
                                                               v1_v2) -> None:
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    install(app, admin_session, ref2)
    other = InstallLock(app.layout.releases)      # another installer, alive
    assert other.acquire()
    try:
        with pytest.raises(UpdateRefused, match="another install, rollback or recovery"):
            updates.install(app, admin_session, ref2, edges())
        with pytest.raises(UpdateRefused, match="another install, rollback or recovery"):
            updates.rollback(app, admin_session, ref1, sign_req(ADMIN), edges())
    finally:
        other.release()
    install_refusal, rollback_refusal = events(app, "update.refused")[-2:]
    for refusal, ref, step in ((install_refusal, ref2, "install"),
                               (rollback_refusal, ref1, "rollback")):
        digest = find_bundle(app.conn, ref).digest
        assert refusal["target"]["id"] == ref and refusal["target"]["digest"] == digest
        assert refusal["details"]["bundle_digest"] == digest
        assert refusal["details"]["step"] == step


def test_every_hardware_fit_of_a_bundle_names_its_digest(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    install(app, admin_session, ref1)
    digest = find_bundle(app.conn, ref1).digest
    fits = events(app, "hardware.fit", ref1)
    assert len(fits) >= 3                      # show, approve, install
    for fit in fits:
        assert fit["target"]["digest"] == digest
        assert fit["details"]["bundle_digest"] == digest
    updates.show(app, admin_session, ref1, source=h100())
    assert events(app, "hardware.fit")[-1]["target"]["digest"] == digest


def test_a_dry_fit_of_an_engines_directory_names_no_bundle(app, admin_session) -> None:
    from pathlib import Path

    from appliance.services import hardware
    engines = Path(__file__).parents[1] / "hardware" / "fixtures" / "engines"
    hardware.fit(app, admin_session, engines, source=h100())
    fit = events(app, "hardware.fit")[-1]
    assert fit["target"]["digest"] is None and "bundle_digest" not in fit["details"]
    assert json.dumps(fit)      # a plain event


def _edit_serving(release) -> None:
    path = release / "serving.json"
    cfg = json.loads(path.read_text())
    cfg["model_dir"] = "/srv/someone-elses-model"        # the profile and digest untouched
    path.chmod(0o644)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def test_an_edited_serving_json_is_not_the_approved_release(app, admin_session,
                                                            v1_v2) -> None:
    """serving.json says which model, engine and adapters run; it is generated from the
    records, so the deep status and a rollback compare it with what they generate."""
    ref1, ref2 = v1_v2
    install(app, admin_session, ref1)
    install(app, admin_session, ref2)
    assert updates.status(app, admin_session, deep=True)["consistent"] is True
    releases = app.layout.releases
    _edit_serving(releases / "demo-clinical/2")
    st = updates.status(app, admin_session, deep=True)
    assert st["problems"] == ["active release demo-clinical/2: serving.json: not the one "
                              "generated from the records (edited)"]
    _edit_serving(releases / "demo-clinical/1")
    with pytest.raises(UpdateRefused, match="kept release demo-clinical/1 is damaged: "
                                            "serving.json: not the one generated"):
        updates.rollback(app, admin_session, ref1, sign_req(ADMIN), edges())
    assert os.readlink(releases / "current") == "demo-clinical/2"     # nothing switched
    assert find_bundle(app.conn, ref1).state == State.APPROVED
    assert find_bundle(app.conn, ref2).state == State.ACTIVE


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_store_object_missing_or_truncated_is_named_before_the_layout(
        app, admin_session, v1_v2, damage) -> None:
    ref1, _ = v1_v2
    approve(app, admin_session, ref1)
    bundle = find_bundle(app.conn, ref1)
    adapter = next(c for c in bundle.components if c.kind == "lora_adapter")
    relpath, sha, _ = adapter.files[-1]
    obj = ContentStore(app.layout.store).path_of(sha)
    if damage == "missing":
        obj.unlink()
    else:
        obj.chmod(0o644)
        obj.write_bytes(obj.read_bytes()[:-1])
    with pytest.raises(UpdateRefused) as err:
        updates.install(app, admin_session, ref1, edges())
    assert err.value.message == (
        f"the content store lacks or holds a damaged copy of components/{adapter.name}/"
        f"{relpath} ({sha[:12]}), needed "
        "by release demo-clinical/1")
    assert "restore it from a backup" in err.value.hint
    [undone] = events(app, "update.install_undone", ref1)
    assert undone["target"]["digest"] == bundle.digest
    assert undone["reason"] == "install refused before the switch: " + err.value.message
    assert find_bundle(app.conn, ref1).state == State.APPROVED
    assert not (app.layout.releases / "demo-clinical").exists()
    assert consistency(app) == []


def test_releases_that_is_a_file_is_one_line_of_damage(app, admin_session, v1_v2) -> None:
    ref1, _ = v1_v2
    approve(app, admin_session, ref1)
    releases = app.layout.releases
    if releases.exists():
        shutil.rmtree(releases)
    releases.write_text("not a directory\n")
    for call in (lambda: updates.status(app, admin_session),
                 lambda: updates.install(app, admin_session, ref1, edges())):
        with pytest.raises(IntegrityError) as err:
            call()
        assert err.value.message == f"cannot open the install lock {releases}/.install.lock: " \
                                    f"{releases} is not a directory"
        assert "report it to the security officer" in err.value.hint
    assert find_bundle(app.conn, ref1).state == State.APPROVED
