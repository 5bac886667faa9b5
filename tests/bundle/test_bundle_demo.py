"""`appliance demo setup` publishes, trusts and imports the demo bundle through the same
services a hospital uses."""

from __future__ import annotations

import json

from appliance.context import Appliance
from appliance.demo import ensure_demo


def test_demo_setup_imports_a_signed_demo_bundle(tmp_path):
    home = tmp_path / "demo"
    assert ensure_demo(home) is True
    with Appliance.open(home) as app:
        rows = app.conn.execute("SELECT name, version, state, imported_by FROM bundles"
                                ).fetchall()
        assert rows == [("demo-clinical", 1, "IMPORTED", "itops")]
        kinds = sorted(k for (k,) in app.conn.execute("SELECT kind FROM bundle_components"))
        assert kinds == ["base_model", "golden_set", "lora_adapter", "trtllm_engine"]
        trust = json.loads(app.conn.execute(
            "SELECT body FROM audit_events WHERE action = 'trust.init'").fetchone()[0])
        assert trust["signature"]["username"] == "admin" and trust["outcome"] == "success"
        imported = json.loads(app.conn.execute(
            "SELECT body FROM audit_events WHERE action = 'media.import'").fetchone()[0])
        assert imported["outcome"] == "success" and imported["actor"]["username"] == "itops"
    assert (home / "demo-vendor" / "media" / "demo-clinical-1" / "metadata" /
            "root.json").exists()
    assert ensure_demo(home) is False
