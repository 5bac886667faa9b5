"""`appliance demo setup` (ensure_demo): the demo appliance opens on a realistic state made by
the real services and signatures: demo-clinical@1 ACTIVE, demo-clinical@2 waiting for the
admin's signature. The GPU reading is a recorded no-driver one (the edge), so the hardware
fit falls back to the CPU profile on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.audit.verify import verify_trail
from appliance.clock import Clock
from appliance.context import Appliance
from appliance.demo import DEMO_GATES, DEMO_USERS, demo_logins, ensure_demo
from appliance.errors import AlreadyInitialised, InvalidInput, PermissionDenied, UpdateRefused
from appliance.hardware import GpuInventory, RecordedSource, write_reading
from appliance.services import auth, updates
from appliance.services.setup import init_appliance
from appliance.services.signing import SignatureRequest
from appliance.updates.install import Edges
from appliance.updates.view import view_text

USERS = {u.username: u for u in DEMO_USERS}
KINDS = ["base_model", "evaluation_evidence", "golden_set", "lora_adapter", "trtllm_engine"]
CPU_NOTE = "no NVIDIA driver found: falling back to CPU profile tiny-base-cpu"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """One demo set-up per module (it takes seconds); each test works on a copy."""
    base = tmp_path_factory.mktemp("demo")
    reading = base / "no-driver.json"
    write_reading(GpuInventory(driver_found=False, error="NVML Shared Library Not Found"),
                  reading)
    assert ensure_demo(base / "home", RecordedSource(reading)) is True
    return base / "home", reading


@pytest.fixture
def demo(built, tmp_path) -> Path:
    home = tmp_path / "demo"
    shutil.copytree(built[0], home, symlinks=True)
    return home


def login(app: Appliance, username: str):
    return auth.login(app, username, USERS[username].password)


def sign(username: str, reason: str) -> SignatureRequest:
    return SignatureRequest("approved", reason, USERS[username].password, username,
                            acknowledge_statement=True)


def events(app: Appliance, target: str) -> list[dict]:
    return [json.loads(b) for (b,) in app.conn.execute(
        "SELECT body FROM audit_view WHERE target_id = ? ORDER BY seq", (target,))]


def test_demo_opens_with_one_release_active_and_the_next_waiting(demo) -> None:
    with Appliance.open(demo) as app:
        rows = app.conn.execute("SELECT name, version, state, imported_by, size_bytes FROM "
                                "bundles ORDER BY version").fetchall()
        assert [r[:4] for r in rows] == [("demo-clinical", 1, "ACTIVE", "itops"),
                                         ("demo-clinical", 2, "PENDING_APPROVAL", "itops")]
        assert all(r[4] < 16 * 1024 for r in rows)      # tiny: made on the spot, in KBs
        for bundle_id in (1, 2):
            assert sorted(k for (k,) in app.conn.execute(
                "SELECT kind FROM bundle_components WHERE bundle_id = ?", (bundle_id,))) == KINDS
        assert app.settings.evaluation == DEMO_GATES

        trust = json.loads(app.conn.execute("SELECT body FROM audit_view WHERE action = "
                                            "'trust.init'").fetchone()[0])
        assert (trust["signature"]["username"], trust["outcome"]) == ("admin", "success")

        v1 = events(app, "demo-clinical@1")
        assert [(e["action"], e["actor"]["username"]) for e in v1
                if e["action"] != "hardware.fit"] == [
            ("media.import", "itops"), ("update.verified", "itops"),
            ("update.evaluated", "itops"), ("update.submitted", "itops"),
            ("update.viewed", "admin"), ("update.approved", "admin"),
            ("update.install_started", "itops"), ("update.laid_out", "itops"),
            ("update.switched", "itops"), ("update.services_restarted", "itops"),
            ("update.restart_step", "itops"), ("update.health_check", "itops"),
            ("update.activated", "itops")]
        assert all(e["outcome"] == "success" for e in v1)
        approved = next(e for e in v1 if e["action"] == "update.approved")
        assert approved["signature"]["name"] == "Dana Admin"
        assert approved["signature"]["meaning"] == "approved"
        assert approved["details"]["profile"] == "tiny-base-cpu"
        verified = next(e for e in v1 if e["action"] == "update.verified")
        # The engine's own config.json was read and agreed with its signed profile.
        assert verified["details"]["verification"]["engines_checked"] == ["tiny-engine-h100"]

        v2 = events(app, "demo-clinical@2")
        assert [e["action"] for e in v2] == ["media.import", "update.verified",
                                             "update.evaluated", "update.submitted"]
        assert v2[2]["reason"] == ("evaluation gates passed: exact_match 0.95 (>= 0.85), "
                                   "hallucination_rate 0 (<= 0.05)")
        assert verify_trail(app.conn, app.key.public).ok
        # Marked as the demo, so the console's login screen shows these published logins.
        assert demo_logins(app) == DEMO_USERS

    assert os.readlink(demo / "releases" / "current") == "demo-clinical/1"
    serving = json.loads((demo / "releases" / "current" / "serving.json").read_text())
    assert serving["runtime"] == "transformers"
    assert serving["model_dir"] == "components/tiny-base"
    assert serving["adapters"][0]["name"] == "tiny-adapter"
    for version in (1, 2):      # the demo vendor's media stay, to import again by hand
        assert (demo / "demo-vendor" / "media" / f"demo-clinical-{version}" / "metadata" /
                "root.json").is_file()
    assert ensure_demo(demo) is False


def test_the_approval_view_explains_the_cpu_fallback_and_the_diff(built, demo) -> None:
    _, reading = built
    with Appliance.open(demo) as app:
        view = updates.show(app, login(app, "admin"), "demo-clinical@2",
                            source=RecordedSource(reading))
    assert view["bundle"]["state"] == "PENDING_APPROVAL"
    assert view["version"]["relation"] == "upgrade from version 1"
    hw = view["hardware"]
    assert (hw["chosen"], hw["fallback_to_cpu"], hw["note"]) == ("tiny-base-cpu", True,
                                                                 CPU_NOTE)
    assert {c["profile_id"]: c["reason"] for c in hw["candidates"]} == {
        "tiny-engine-h100": "engine sm_90 tp1 needs an NVIDIA GPU, no NVIDIA driver found",
        "tiny-base-cpu": "cpu profile runs without a GPU; no NVIDIA driver found"}
    assert {c["name"]: c["change"] for c in view["components"]} == {
        "tiny-adapter": "changed", "tiny-evidence": "changed", "tiny-base": "unchanged",
        "tiny-engine-h100": "unchanged", "tiny-golden": "unchanged"}
    assert view["evaluation"]["passed"] is True
    assert [(c["metric"], c["value"], c["ok"]) for c in view["evaluation"]["checks"]] == [
        ("exact_match", 0.95, True), ("hallucination_rate", 0.0, True)]
    assert f"hardware: {CPU_NOTE}" in view_text(view)

    env = {**os.environ, "APPLIANCE_HOME": str(demo), "APPLIANCE_GPU_READING": str(reading)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance", "update", *args, "--user",
                               "admin", "--password-stdin"], input="demo-pass-dana\n",
                              capture_output=True, text=True, env=env, timeout=120)

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["ref"], r["state"]) for r in json.loads(listed.stdout)] == [
        ("demo-clinical@2", "PENDING_APPROVAL"), ("demo-clinical@1", "ACTIVE")]
    shown = cli("show", "demo-clinical@2")
    assert shown.returncode == 0, shown.stderr
    for text in (f"hardware: {CPU_NOTE}", "changed   tiny-adapter",
                 "version 2: upgrade from version 1", "approvals: 0 of 1"):
        assert text in shown.stdout, text


def test_an_admin_who_did_not_import_it_approves_and_installs(built, demo) -> None:
    _, reading = built
    source = RecordedSource(reading)
    ref = "demo-clinical@2"
    with Appliance.open(demo) as app:
        itops, admin = login(app, "itops"), login(app, "admin")
        with pytest.raises(PermissionDenied):
            updates.approve(app, itops, ref, sign("itops", "I imported it"), source=source)
        with pytest.raises(UpdateRefused, match="has not opened the approval view"):
            updates.approve(app, admin, ref, sign("admin", "unseen"), source=source)
        updates.show(app, admin, ref, source=source)
        signed = updates.approve(app, admin, ref, sign(
            "admin", "evidence meets the gates; the CPU profile fits"), source=source)
        assert signed["state"] == "APPROVED"
        assert signed["signature"]["name"] == "Dana Admin"
        assert signed["record"]["profile"] == "tiny-base-cpu"

        result = updates.install(app, itops, ref, Edges(source=source))
        assert result.outcome == "activated", result.reason
        assert result.previous == "demo-clinical/1"
        assert all(h["ok"] for h in result.health)
        states = dict(app.conn.execute("SELECT version, state FROM bundles").fetchall())
        assert states == {1: "APPROVED", 2: "ACTIVE"}       # 1 is kept for rollback
        status = updates.status(app, admin)
        assert status["current"] == "demo-clinical/2" and status["consistent"]
        assert verify_trail(app.conn, app.key.public).ok
        # Every change to a record on the way says why, the automatic steps included.
        unexplained = app.conn.execute(
            "SELECT body ->> '$.action' FROM audit_events WHERE body -> '$.old' != 'null' "
            "AND trim(coalesce(body ->> '$.reason', '')) = ''").fetchall()
        assert unexplained == []
        reasons = dict(app.conn.execute(
            "SELECT body ->> '$.action', body ->> '$.reason' FROM audit_events WHERE "
            "body ->> '$.target.id' = ? ORDER BY seq", (ref,)).fetchall())
        assert reasons["update.activated"] == ("the install of release demo-clinical/2 "
                                               "passed its health checks")
        assert reasons["update.verified"].startswith("verification passed: ")
    assert os.readlink(demo / "releases" / "current") == "demo-clinical/2"


def test_a_failed_setup_leaves_no_half_made_demo(tmp_path) -> None:
    home = tmp_path / "demo"
    # The GPU reading is missing, so opening release 1 for approval fails half-way.
    with pytest.raises(InvalidInput, match="GPU reading"):
        ensure_demo(home, RecordedSource(tmp_path / "missing.json"))
    assert not home.exists()


def test_demo_setup_refuses_an_appliance_that_is_not_the_demo(tmp_path) -> None:
    """`demo setup` on a real appliance said "Demo appliance already present" and printed
    demo logins that do not exist there; now it is refused and nothing changes."""
    home = tmp_path / "real"
    init_appliance(home, "alice", "Alice Adams", "correct horse battery").close()
    before = sorted(p.name for p in home.rglob("*"))
    with pytest.raises(AlreadyInitialised, match="holds an appliance that is not the demo"):
        ensure_demo(home)
    assert sorted(p.name for p in home.rglob("*")) == before


def test_a_demo_killed_half_way_is_made_again(built, tmp_path) -> None:
    """A set-up killed after the demo appliance was created (a closed terminal, kill -9)
    left a demo without its history, which every later `make demo` called present."""
    home = tmp_path / "demo"
    code = ("import os\nfrom pathlib import Path\nimport appliance.demo as demo\n"
            "demo._update_history = lambda *a: os._exit(9)\n"
            f"demo.ensure_demo(Path({str(home)!r}))\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    with Appliance.open(home) as app:
        assert app.conn.execute("SELECT count(*) FROM bundles").fetchone() == (0,)
    assert ensure_demo(home, RecordedSource(built[1])) is True
    with Appliance.open(home) as app:
        assert app.conn.execute("SELECT version, state FROM bundles ORDER BY version"
                                ).fetchall() == [(1, "ACTIVE"), (2, "PENDING_APPROVAL")]
        assert verify_trail(app.conn, app.key.public).ok
    assert ensure_demo(home) is False


def test_the_printed_demo_logins_still_work_months_later(demo) -> None:
    """The demo's passwords expired after 90 days like any others, so the logins `make demo`
    prints (and the login screen shows) asked for a new password; they are published, and
    now never expire."""
    later = datetime.now(UTC) + timedelta(days=400)
    with Appliance.open(demo, clock=Clock(now=lambda: later)) as app:
        for user in DEMO_USERS:
            assert login(app, user.username).password_expired is False
