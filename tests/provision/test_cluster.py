"""Two hosts: localhost and a network namespace running sshd, each with its own
appliance_root. Both converge, a re-run changes nothing, and a failure on one host is
reported for that host while the other's result stands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.provision.inventory import fingerprint
from appliance.services import provision
from appliance.services.provision import RunRequest
from tests.conftest import PASSWORD
from tests.provision.kit import make_release, make_root, site_vars
from tests.provision.netns import REMOTE_PYTHON, ssh_node

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--user", "ivan",
                           "--password-stdin", "--json"], input=PASSWORD + "\n",
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, APPLIANCE_HOME=str(home)))


@pytest.fixture
def node(tmp_path: Path):
    with ssh_node(tmp_path / "node") as n:
        yield n


def test_two_hosts_converge_rerun_clean_and_fail_independently(
        appliance: Appliance, it_session: Session, home: Path, tmp_path: Path, node,
        wheelhouse: Path) -> None:
    root_a, root_b = make_root(tmp_path, "root-a"), make_root(tmp_path, "root-b")
    r = cli(home, "provision", "inventory", "add", "localhost", "--root", str(root_a))
    assert r.returncode == 0, r.stderr
    r = cli(home, "provision", "inventory", "add", "node2", "--address", node.address,
            "--ssh-user", "root", "--key", str(node.client_key), "--root", str(root_b),
            "--python", REMOTE_PYTHON)
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    # The scanned host key is the one the node really has, and is pinned.
    assert added["host_key_fingerprints"] == [fingerprint(node.host_key_pub.read_text())]
    assert Path(added["key_file"]).stat().st_mode & 0o777 == 0o600

    ev = site_vars(wheelhouse)
    first = provision.run(appliance, it_session, RunRequest("site.yml", "cluster", False, ev))
    assert first.status == "successful", first.failure
    assert set(first.hosts) == {"localhost", "node2"}
    for host, root in (("localhost", root_a), ("node2", root_b)):
        assert first.hosts[host]["changed"] > 0 and first.hosts[host]["failed"] == 0
        assert (root / "opt/appliance/current").readlink() == \
            root / "var/lib/appliance/releases/demo/1.0.0"
        assert (root / "opt/appliance/venv/lib").is_dir()

    again = provision.run(appliance, it_session, RunRequest("site.yml", "cluster", False, ev))
    assert again.status == "successful"
    assert {h: c["changed"] for h, c in again.hosts.items()} == {"localhost": 0, "node2": 0}

    # Release 2.0.0 exists on localhost only: node2 fails in the release role, alone.
    make_release(root_a, "2.0.0")
    upd = provision.run(appliance, it_session, RunRequest(
        "update.yml", "cluster", False, {**ev, "appliance_release": "demo/2.0.0"}))
    assert upd.status == "failed"
    assert upd.hosts["localhost"]["failed"] == 0
    assert upd.hosts["localhost"]["changed_by_role"] == {"release": 1}
    assert upd.hosts["node2"]["failed"] == 1 and upd.hosts["node2"]["changed"] == 0
    assert upd.failure == (
        f"node2: release : Refuse a release that is not on the host: release directory "
        f"{root_b}/var/lib/appliance/releases/demo/2.0.0 not found on node2 (install the "
        f"release there with the lifecycle first)")
    assert (root_a / "opt/appliance/current").readlink() == \
        root_a / "var/lib/appliance/releases/demo/2.0.0"
    assert (root_b / "opt/appliance/current").readlink() == \
        root_b / "var/lib/appliance/releases/demo/1.0.0"
    assert first.inventory_digest == again.inventory_digest == upd.inventory_digest
