"""site.yml, update.yml and verify.yml against localhost into a scratch appliance_root.

One module-scoped appliance walks the story in order: check mode changes nothing, a real
run converges, a re-run changes nothing in any role, update.yml switches the release and
restarts serving, verify.yml reports health.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.provision.inventory import Host
from appliance.provision.plan import tasks_per_host
from appliance.services import audit, auth, provision, provision_inventory, users
from appliance.services.provision import RunRequest
from appliance.services.setup import init_appliance
from tests.conftest import ADMIN, ADMIN_NAME, FAST, PASSWORD, SteppingClock
from tests.provision.kit import make_release, make_root, site_vars

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")

ROLES = ("preflight", "runtime", "release", "serving", "hardening")
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path):
    """Check run then real run on a fresh root; later tests add to the same appliance."""
    base = tmp_path_factory.mktemp("site")
    app = init_appliance(base / "home", ADMIN, ADMIN_NAME, PASSWORD, clock=SteppingClock(),
                         settings=FAST, terminal="test-terminal")
    admin = auth.login(app, ADMIN, PASSWORD)
    users.add_user(app, admin, "ivan", "Ivan Ito", ["it"], PASSWORD, "test account",
                   must_change_password=False)
    session = auth.login(app, "ivan", PASSWORD)
    root = make_root(base)
    # The scratch root is the inventory's localhost's, as IT would set it (extra variables
    # may not replace a host's root).
    provision_inventory.add_host(app, session, Host(
        "localhost", connection="local", appliance_root=str(root), python=sys.executable))
    ev = site_vars(wheelhouse)
    before = _files(root)
    batches: list[list] = []
    check = provision.run(app, session, RunRequest("site.yml", "local", True, ev),
                          batches.append)
    after_check = _files(root)
    real = provision.run(app, session, RunRequest("site.yml", "local", False, ev))
    yield {"app": app, "session": session, "root": root, "vars": ev, "check": check,
           "real": real, "before": before, "after_check": after_check, "batches": batches}
    app.close()


def test_check_mode_reports_changes_but_changes_nothing(story) -> None:
    check = story["check"]
    assert check.status == "successful" and check.check
    assert check.hosts["localhost"]["changed"] > 0
    assert story["after_check"] == story["before"]
    # Events came in batches (throttled), in order, with a growing progress figure.
    events = [e for batch in story["batches"] for e in batch]
    assert len(story["batches"]) < len(events)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    results = [e for e in events if e.kind in ("ok", "changed", "skipped")]
    assert results[-1].done == len(results) and results[-1].total >= results[-1].done
    assert {e.role for e in results} >= set(ROLES)


def test_real_run_converges_the_root(story) -> None:
    root, real = story["root"], story["real"]
    assert real.status == "successful", real.failure
    counts = real.hosts["localhost"]
    assert counts["failed"] == 0 and counts["changed"] > 0
    current = root / "opt/appliance/current"
    assert current.is_symlink()
    assert Path(current.readlink()) == root / "var/lib/appliance/releases/demo/1.0.0"
    env = (root / "etc/appliance/serving.env").read_text()
    assert "APPLIANCE_BIND_ADDRESS=127.0.0.1\n" in env and "APPLIANCE_ENGINE=vllm\n" in env
    assert _mode(root / "etc/appliance/serving.env") == 0o640
    unit = (root / "etc/systemd/system/appliance-serving.service").read_text()
    assert f"EnvironmentFile={root}/etc/appliance/serving.env" in unit
    rules = (root / "etc/nftables.d/appliance.nft").read_text()
    assert "policy drop" in rules and "dport 8000" not in rules  # no port open by default
    assert 'include "/etc/nftables.d/appliance.nft"' in (root / "etc/nftables.conf").read_text()
    assert _mode(root / "var/lib/appliance/appliance.db") == 0o600
    assert _mode(root / "var/lib/appliance/keys") == 0o700
    assert _mode(root / "var/lib/appliance/keys/signing.pem") == 0o600
    assert _mode(root / "var/lib/appliance/releases/demo/1.0.0/model/config.json") == 0o640
    assert _mode(root / "var/lib/appliance/releases/demo") == 0o750
    probe = subprocess.run([str(root / "opt/appliance/venv/bin/python"), "-c",
                            "import appliance_probe; print(appliance_probe.VERSION)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "1.0"
    # Service actions were skipped, and the run output says so.
    app, session = story["app"], story["session"]
    stdout = provision.read_artifact(app, session, real.id, f"artifacts/{real.id}/stdout",
                                     limit=256 * 1024).text
    assert "skipped: appliance_root is" in stdout and "not enabled or started" in stdout


def test_rerun_changes_nothing_in_any_role(story) -> None:
    app, session = story["app"], story["session"]
    again = provision.run(app, session, RunRequest("site.yml", "local", False, story["vars"]))
    assert again.status == "successful"
    counts = again.hosts["localhost"]
    assert counts["changed"] == 0 and counts["changed_by_role"] == {}
    events = provision.run_events(app, session, again.id)
    results = [e for e in events if e.kind in ("ok", "changed", "skipped", "failed")]
    assert {e.role for e in results} == set(ROLES) | {""}  # "" is fact gathering
    assert not [e for e in results if e.kind == "changed"]
    # No handler fired, so the static plan is exactly what ran.
    assert len(results) == tasks_per_host(PLAYBOOKS, "site.yml")


def test_check_mode_on_the_converged_root_shows_no_change(story) -> None:
    app, session = story["app"], story["session"]
    rec = provision.run(app, session, RunRequest("site.yml", "local", True, story["vars"]))
    assert rec.status == "successful" and rec.check
    assert rec.hosts["localhost"]["changed"] == 0, rec.hosts


def test_update_switches_release_and_restarts_serving(story) -> None:
    app, session, root = story["app"], story["session"], story["root"]
    make_release(root, "2.0.0")
    ev = {**story["vars"], "appliance_release": "demo/2.0.0"}
    rec = provision.run(app, session, RunRequest("update.yml", "local", False, ev))
    assert rec.status == "successful", rec.failure
    assert rec.hosts["localhost"]["changed_by_role"] == {"release": 1}
    assert (root / "opt/appliance/current").readlink() == \
        root / "var/lib/appliance/releases/demo/2.0.0"
    events = provision.run_events(app, session, rec.id)
    restart = [e for e in events if e.task == "Note the restart that was skipped"]
    assert [e.kind for e in restart] == ["started", "ok"] and restart[0].handler


def test_verify_reports_health_and_changes_nothing(story) -> None:
    app, session, root = story["app"], story["session"], story["root"]
    before = {p: p.lstat().st_mtime_ns for p in root.rglob("*")}
    rec = provision.run(app, session, RunRequest("verify.yml", "local"))
    assert rec.status == "successful", rec.failure
    assert rec.hosts["localhost"]["changed"] == 0
    assert {p: p.lstat().st_mtime_ns for p in root.rglob("*")} == before
    # Break something verify checks: it fails naming it.
    (root / "etc/nftables.d/appliance.nft").unlink()
    bad = provision.run(app, session, RunRequest("verify.yml", "local"))
    assert bad.status == "failed"
    assert bad.failure.startswith("localhost: Fail naming what is unhealthy: unhealthy: ")
    assert "firewall rules missing" in bad.failure


def test_every_run_is_in_the_audit_trail(story) -> None:
    app: Appliance = story["app"]
    admin = auth.login(app, ADMIN, PASSWORD)
    started = audit.events(app, admin, EventFilter(action="provision.start"), limit=50)
    ended = audit.events(app, admin, EventFilter(action="provision.run"), limit=50)
    assert len(started) == len(ended) >= 2
    real = next(e.data for e in ended if e.data["target"]["id"] == story["real"].id)
    d = real["details"]
    assert real["actor"]["username"] == "ivan" and real["actor"]["role"] == "it"
    assert d["playbook"] == "site.yml" and d["mode"] == "run" and d["status"] == "successful"
    assert d["inventory_digest"] == story["real"].inventory_digest
    assert d["host_counts"]["localhost"]["changed"] == story["real"].hosts["localhost"][
        "changed"]
    assert d["duration_s"] > 0 and real["outcome"] == "success"
    runs = provision.list_runs(app, story["session"])
    assert [r.id for r in runs][-2:] == [story["real"].id, story["check"].id]
    assert json.dumps(d["extra_vars"]) == json.dumps(story["real"].extra_vars)
