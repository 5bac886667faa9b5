"""On the demo appliance (`make demo`'s setup): approve, install, a health check that fails,
automatic rollback; the auditor's export shows every step, and the offline verifier accepts
the export. The set-up left version 1 active and version 2 waiting for approval; the demo
vendor then publishes version 3 with its own keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from appliance.bundle.demo_bundle import DemoRelease, publish_demo_release
from appliance.context import Appliance
from appliance.demo import DEMO_USERS, ensure_demo
from appliance.services import auth, updates
from appliance.services import media as media_service
from appliance.services.audit_export import export_trail
from appliance.services.signing import SignatureRequest
from appliance.updates.install import Edges
from tests.updates.kit import h100
from tests.updates.test_install import FailingCheck

VERIFIER = Path(__file__).resolve().parents[2] / "packaging" / "verify-audit-export"
USERS = {u.username: u for u in DEMO_USERS}


def sign(user: str, reason: str) -> SignatureRequest:
    return SignatureRequest("approved", reason, USERS[user].password, user,
                            acknowledge_statement=True)


def test_demo_approve_install_health_fail_rollback_in_the_audit_export(tmp_path) -> None:
    home = tmp_path / "demo"
    assert ensure_demo(home, source=h100())
    v3 = publish_demo_release(home / "demo-vendor", DemoRelease(3, 13, 0.91, 0.01,
                                                                "demo release 3"))
    with Appliance.open(home, terminal="demo-console") as app:
        dana = auth.login(app, "admin", USERS["admin"].password)
        ira = auth.login(app, "itops", USERS["itops"].password)
        media_service.import_bundle(app, ira, v3)
        first = updates.show(app, dana, "demo-clinical@1", source=h100())
        assert first["bundle"]["state"] == "ACTIVE"      # installed by the set-up

        updates.show(app, dana, "demo-clinical@2", source=h100())
        updates.approve(app, dana, "demo-clinical@2", sign(
            "admin", "evidence meets the gates; engine fits the H100s"), source=h100())
        ok = updates.install(app, ira, "demo-clinical@2", Edges(source=h100()))
        assert ok.outcome == "activated"

        updates.show(app, dana, "demo-clinical@3", source=h100())
        updates.approve(app, dana, "demo-clinical@3", sign("admin", "adapter refresh"),
                        source=h100())
        failed = updates.install(app, ira, "demo-clinical@3", Edges(
            source=h100(), checks=[*Edges().checks, FailingCheck()]))
        assert failed.outcome == "rolled_back"
        assert updates.status(app, dana)["current"] == "demo-clinical/2"

        auditor = auth.login(app, "auditor", USERS["auditor"].password)
        out = tmp_path / "usb"
        out.mkdir()
        export = export_trail(app, auditor, "jsonl", out / "trail.jsonl")
        pub = app.layout.public_key

    lines = [json.loads(x) for x in export.path.read_text().splitlines() if x.strip()]
    events = [x["event"] for x in lines if "event" in x]
    v3_steps = [(e["action"], e["outcome"]) for e in events
                if e["target"]["id"] == "demo-clinical@3"]
    assert v3_steps == [
        ("media.import", "success"), ("update.verified", "success"),
        ("update.evaluated", "success"), ("update.submitted", "success"),
        ("hardware.fit", "success"), ("update.viewed", "success"),
        ("hardware.fit", "success"), ("update.approved", "success"),
        ("hardware.fit", "success"), ("update.install_started", "success"),
        ("update.laid_out", "success"), ("update.switched", "success"),
        ("update.services_restarted", "success"), ("update.restart_step", "success"),
        ("update.health_check", "failure"), ("update.switched", "failure"),
        ("update.services_restarted", "success"), ("update.rolled_back", "failure")]
    by_action = {e["action"]: e for e in events if e["target"]["id"] == "demo-clinical@3"}
    approved = by_action["update.approved"]
    assert approved["signature"]["name"] == "Dana Admin"
    assert approved["signature"]["meaning"] == "approved"
    health = by_action["update.health_check"]
    assert {c["name"]: c["ok"] for c in health["details"]["checks"]} == {
        "release_digests": True, "serving_config": True, "hardware_profile": True,
        "smoke_prompt": False}
    rolled = by_action["update.rolled_back"]
    assert rolled["reason"] == "health check failed: smoke_prompt: golden prompt 3 answered " \
                               "nothing"
    assert rolled["details"]["restored"] == "demo-clinical/2"
    digest = by_action["update.install_started"]["target"]["digest"]
    assert all(e["details"].get("bundle_digest") == digest for e in events
               if e["target"]["id"] == "demo-clinical@3" and e["action"].startswith("update."))
    check = subprocess.run([sys.executable, "-I", str(VERIFIER), str(export.path), "--key",
                            str(pub)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("OK: trail.jsonl")
