"""Installs that restart serving through provisioning: the real update.yml run through
ansible-runner against localhost into a scratch appliance_root (set on the inventory's
localhost), recorded as provisioning runs under the installer, and a failing run that fails
the health step and rolls the install back."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.audit.events import SYSTEM_ACTOR
from appliance.errors import InvalidInput, PermissionDenied
from appliance.provision import records
from appliance.provision.inventory import Host
from appliance.services import provision, provision_inventory, updates
from appliance.services.provision_restart import AnsibleRestarter
from appliance.settings import ProvisioningPolicy, load_settings, save_settings
from appliance.updates.install import Edges
from appliance.updates.lifecycle import State, find_bundle
from appliance.updates.recovery import consistency
from appliance.updates.restart import RecordingRestarter, configured_restarter
from tests.conftest import ADMIN, PASSWORD, cli_env
from tests.updates.kit import H100_READING, approve, h100, trust_and_import
from tests.updates.test_lifecycle import events

# Real playbook runs: on the provisioning tests' xdist worker.
pytestmark = pytest.mark.xdist_group("provision")


@pytest.fixture
def host_root(tmp_path: Path, app, itop) -> Path:
    """localhost as site.yml's runtime role leaves it (the directories update.yml writes
    into; site.yml itself runs in tests/provision), in a scratch root set on the
    inventory's localhost. Installs restart serving through update.yml."""
    root = tmp_path / "host-root"
    for path, mode in (("opt/appliance", 0o755), ("etc/appliance", 0o750),
                       ("etc/systemd/system", 0o755)):
        (root / path).mkdir(parents=True)
        (root / path).chmod(mode)
    provision_inventory.add_host(app, itop, Host("localhost", connection="local",
                                            appliance_root=str(root), python=sys.executable))
    app.settings = dataclasses.replace(app.settings,
                                       provisioning=ProvisioningPolicy(restarter="ansible"))
    return root


def install(app, admin, ref):
    approve(app, admin, ref)
    return updates.install(app, admin, ref, Edges(source=h100()))


def test_install_switches_the_hosts_current_link_through_update_yml(
        app, admin_session, security, itop, media, host_root) -> None:
    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    link = host_root / "opt/appliance/current"
    assert install(app, admin_session, ref1).outcome == "activated"
    assert os.readlink(link) == str(app.layout.releases / "demo-clinical/1")
    result = install(app, admin_session, ref2)
    assert result.outcome == "activated"
    assert os.readlink(link) == str(app.layout.releases / "demo-clinical/2")
    env = (host_root / "etc/appliance/serving.env").read_text()
    assert f"APPLIANCE_RELEASE_DIR={link}" in env   # serving reads the switched link
    # Each restart is a provisioning run, recorded under the admin who installed.
    runs = provision.list_runs(app, itop)
    assert [(r.playbook, r.status, r.started_by, r.check) for r in runs] == [
        ("update.yml", "successful", "alice", False)] * 2
    assert runs[0].extra_vars == {
        "appliance_release_dir": str(app.layout.releases / "demo-clinical/2")}
    started = events(app, "provision.start")
    ended = events(app, "provision.run")
    assert [e["details"]["cause"] for e in ended] == [
        "switched to demo-clinical@1", "switched to demo-clinical@2"]
    assert [e["actor"]["username"] for e in started + ended] == ["alice"] * 4
    assert [e["actor"]["role"] for e in ended] == ["admin"] * 2
    restarted = events(app, "update.services_restarted")[-1]
    assert restarted["outcome"] == "success" and restarted["details"]["performed"] is False
    assert restarted["details"]["detail"] == (
        f"update.yml run {runs[0].id} on localhost: release placed; serving restart skipped "
        "(appliance_root is not /)")
    assert result.restarts[0]["detail"] == restarted["details"]["detail"]
    assert consistency(app) == []


def test_a_failing_update_run_fails_the_health_step_and_rolls_back(
        app, admin_session, security, itop, media, host_root) -> None:
    # Hosts hold their own copies of releases (a cluster's layout): only release 1 here.
    app.settings = dataclasses.replace(app.settings, provisioning=ProvisioningPolicy(
        restarter="ansible", release_source="root"))
    on_host = host_root / "var/lib/appliance/releases"
    (on_host / "demo-clinical/1").mkdir(parents=True)
    ref1, ref2 = trust_and_import(app, security, itop, media, 1, 2)
    link = host_root / "opt/appliance/current"
    assert install(app, admin_session, ref1).outcome == "activated"
    assert os.readlink(link) == str(on_host / "demo-clinical/1")

    result = install(app, admin_session, ref2)
    assert result.outcome == "rolled_back"
    failed, restored = provision.list_runs(app, itop)[1::-1]
    missing = on_host / "demo-clinical/2"
    assert failed.status == "failed" and failed.failure == (
        f"localhost: release : Refuse a release that is not on the host: release directory "
        f"{missing} not found on localhost (install the release there with the lifecycle "
        "first)")
    assert result.reason == f"restart: update.yml run {failed.id} on localhost failed: " \
                            f"{failed.failure}"
    assert restored.status == "successful"
    assert os.readlink(link) == str(on_host / "demo-clinical/1")
    assert os.readlink(app.layout.releases / "current") == "demo-clinical/1"
    assert find_bundle(app.conn, ref1).state == State.ACTIVE
    assert find_bundle(app.conn, ref2).state == State.ROLLED_BACK
    [health] = [e for e in events(app, "update.health_check", ref2)]
    assert health["outcome"] == "failure" and health["details"]["checks"] == [
        {"name": "restart", "ok": False,
         "detail": f"update.yml run {failed.id} on localhost failed: {failed.failure}"}]
    causes = [(e["details"]["cause"], e["outcome"]) for e in events(app, "provision.run")]
    assert causes == [
        ("switched to demo-clinical@1", "success"),
        ("switched to demo-clinical@2", "failure"),
        ("switched back from demo-clinical@2 after a failed health check", "success")]
    assert consistency(app) == []


def test_recording_stays_the_default_and_bad_settings_refuse_to_load(
        app, admin_session, tmp_path: Path) -> None:
    actor = admin_session.actor("admin")
    assert isinstance(configured_restarter(app, actor, "t"), RecordingRestarter)
    app.settings = dataclasses.replace(app.settings,
                                       provisioning=ProvisioningPolicy(restarter="ansible"))
    chosen = configured_restarter(app, actor, "t")
    assert isinstance(chosen, AnsibleRestarter) and chosen.actor == actor
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"provisioning": {"restarter": "systemd"}}))
    with pytest.raises(InvalidInput, match="provisioning.restarter is 'systemd'"):
        load_settings(config)
    config.write_text(json.dumps({"provisioning": {"restarter": "ansible",
                                                   "inventory": "cluster"}}))
    assert load_settings(config).provisioning == ProvisioningPolicy("ansible", "cluster")


def test_the_update_step_runs_update_yml_only_and_only_for_the_lifecycle(
        app, admin_session, make_user) -> None:
    step = provision.RunRequest("site.yml", "local")
    with pytest.raises(InvalidInput, match="runs update.yml only"):
        provision.start_update_step(app, SYSTEM_ACTOR, "t", step, "why")
    ml = make_user(["ml"], "mia").actor("ml")
    with pytest.raises(PermissionDenied, match="mia acting as ml may not restart serving"):
        provision.start_update_step(app, ml, "t", provision.RunRequest("update.yml", "local"),
                                    "why")
    assert records.page(app.conn) == [] and events(app, "provision.start") == []


def test_an_install_rolled_back_at_the_cli_is_one_error_line_exit_11(
        app, admin_session, security, itop, media, host_root, home) -> None:
    """The CLI printed the result on stdout and exited 11 with nothing on stderr."""
    app.settings = dataclasses.replace(app.settings, provisioning=ProvisioningPolicy(
        restarter="ansible", release_source="root"))  # release 1 is not on the host
    save_settings(app.layout.config, app.settings)
    [ref1] = trust_and_import(app, security, itop, media, 1)
    approve(app, admin_session, ref1)
    r = subprocess.run([sys.executable, "-m", "appliance", "update", "install", ref1, "--user",
                        ADMIN, "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                       text=True, timeout=300,
                       env={**cli_env(home), "APPLIANCE_GPU_READING": str(H100_READING)})
    assert r.returncode == 11, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: install of {ref1} rolled back: restart: update.yml run ")
    assert line.endswith(f"(see `appliance update show {ref1}` for the checks)")
    assert find_bundle(app.conn, ref1).state == State.ROLLED_BACK
