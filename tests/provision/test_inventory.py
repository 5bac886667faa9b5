"""Inventory: localhost by default, hosts added with pinned keys, audited changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.errors import InvalidInput, PermissionDenied
from appliance.identity.session import Session
from appliance.provision.inventory import Host, fingerprint, render, select
from appliance.services import audit, auth, provision, provision_inventory
from appliance.services.provision import RunRequest
from tests.conftest import ADMIN, PASSWORD

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    for name in ("client", "hostkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(tmp_path / name)], check=True)
    return {"client": tmp_path / "client", "host_pub": tmp_path / "hostkey.pub"}


def test_default_inventory_is_localhost_with_the_appliance_python(
        appliance: Appliance, it_session: Session) -> None:
    hosts = provision_inventory.list_hosts(appliance, it_session)
    assert [h.name for h in hosts] == ["localhost"]
    hv = hosts[0].hostvars()
    assert hv["ansible_connection"] == "local"
    assert hv["ansible_python_interpreter"] == sys.executable
    assert hv["appliance_root"] == "/"


def test_add_pins_the_host_key_copies_the_key_and_is_audited(
        appliance: Appliance, it_session: Session, keys: dict[str, Path], home: Path) -> None:
    host = Host("gpu-2", address="10.213.7.2", user="provision", appliance_root="/srv/a",
                vars={"appliance_serving_profile": "trtllm", "vault_password": "xyzzy-42"})
    added = provision_inventory.add_host(appliance, it_session, host, key_source=keys["client"],
                                    host_key_file=keys["host_pub"])
    assert added.fingerprints() == [fingerprint(keys["host_pub"].read_text())]
    copied = Path(added.key_file)
    assert copied.parent == home / "keys" / "provision"
    assert copied.stat().st_mode & 0o777 == 0o600
    assert copied.read_bytes() == keys["client"].read_bytes()
    hosts = provision_inventory.list_hosts(appliance, it_session)
    assert [h.name for h in hosts] == ["localhost", "gpu-2"]
    rendered = render(select(hosts, "cluster"))
    hv = yaml.safe_load(rendered.text)["all"]["hosts"]["gpu-2"]
    assert hv["ansible_become"] is True and hv["ansible_remote_tmp"] == \
        "/srv/a/var/tmp/appliance-ansible"
    assert rendered.known_hosts.startswith("10.213.7.2 ssh-ed25519 ")
    assert render(select(hosts, "cluster")).digest == rendered.digest  # deterministic
    assert render(select(hosts, "local")).hosts == ("localhost",)
    admin = auth.login(appliance, ADMIN, PASSWORD)
    ev = audit.events(appliance, admin, EventFilter(action="provision.inventory.add"))[-1]
    assert ev.data["new"]["vars"]["vault_password"] == "[redacted]"
    assert "xyzzy-42" not in ev.text

    with pytest.raises(InvalidInput, match="already in the inventory"):
        provision_inventory.add_host(appliance, it_session, host, host_key_file=keys["host_pub"])
    provision_inventory.remove_host(appliance, it_session, "gpu-2", "decommissioned")
    assert not copied.exists()
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == ["localhost"]


@pytest.mark.parametrize("bad, match", [
    (Host("bad name", address="10.0.0.1"), "invalid host name"),
    (Host("n1", address="10.0.0.1; rm -rf /"), "invalid address"),
    (Host("n1", address="10.0.0.1", user="Root!"), "invalid user"),
    (Host("n1", address="10.0.0.1", appliance_root="relative"), "absolute path"),
    (Host("n1", address="10.0.0.1", vars={"ansible_host": "evil"}), "invalid host variable"),
])
def test_bad_hosts_are_refused_with_nothing_stored(
        appliance: Appliance, it_session: Session, keys: dict[str, Path], bad: Host,
        match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        provision_inventory.add_host(appliance, it_session, bad, host_key_file=keys["host_pub"])
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == ["localhost"]


def test_a_bad_ssh_login_names_the_option_that_sets_it(
        appliance: Appliance, it_session: Session, keys: dict[str, Path]) -> None:
    """The hint said `--user`, which is the appliance login, not the host's SSH login."""
    with pytest.raises(InvalidInput, match="invalid user 'root;x'") as refused:
        provision_inventory.add_host(appliance, it_session,
                                     Host("n1", address="10.0.0.1", user="root;x"),
                                     host_key_file=keys["host_pub"])
    assert "--ssh-user NAME" in refused.value.hint


def test_a_public_key_is_not_accepted_as_the_login_key(
        appliance: Appliance, it_session: Session, keys: dict[str, Path], home: Path) -> None:
    with pytest.raises(InvalidInput, match="not an SSH private key"):
        provision_inventory.add_host(appliance, it_session, Host("n1", address="10.0.0.1"),
                                key_source=keys["host_pub"], host_key_file=keys["host_pub"])
    assert not (home / "keys" / "provision" / "n1").exists()


def test_wrong_key_files_are_refused_before_any_scan(
        appliance: Appliance, it_session: Session, keys: dict[str, Path],
        tmp_path: Path) -> None:
    def no_scan(address: str, port: int) -> str:
        raise AssertionError("scanned the network for a host that was refused anyway")
    binary = tmp_path / "host.bin"
    binary.write_bytes(b"\x89\xb7\x00\xff" * 64)
    host = Host("n1", address="10.0.0.1")
    with pytest.raises(InvalidInput, match="no SSH key file .*/absent"):
        provision_inventory.add_host(appliance, it_session, host, scan=no_scan,
                                     key_source=tmp_path / "absent")
    with pytest.raises(InvalidInput, match="host.bin: not a text file"):
        provision_inventory.add_host(appliance, it_session, host, host_key_file=binary)
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == ["localhost"]


def test_only_it_changes_the_inventory(appliance: Appliance, make_user,
                                       keys: dict[str, Path]) -> None:
    with pytest.raises(PermissionDenied):
        provision_inventory.add_host(appliance, make_user(["auditor"]),
                                Host("n1", address="10.0.0.1"), host_key_file=keys["host_pub"])


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "appliance", "provision", *args, "--user",
                           "ivan", "--password-stdin"], input=PASSWORD + "\n",
                          capture_output=True, text=True, env=env, timeout=120)


def test_removing_the_built_in_localhost_says_why_it_cannot(
        appliance: Appliance, it_session: Session, home: Path) -> None:
    """`inventory list` shows localhost, and `inventory remove localhost` said there was
    no host 'localhost'."""
    r = _cli(home, "inventory", "remove", "localhost", "--reason", "back to defaults")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: localhost is built in: every inventory holds this "
                               "server, so it cannot be removed (change its settings with "
                               "`appliance provision inventory add localhost --root ...`")
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == \
        ["localhost"]
    # What was added for it is removed, and the built-in defaults come back.
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", appliance_root="/srv/a", python=sys.executable))
    r = _cli(home, "inventory", "remove", "localhost", "--reason", "back to defaults")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Removed localhost (its settings are the built-in defaults again)"
    [local] = provision_inventory.list_hosts(appliance, it_session)
    assert local.appliance_root == "/"
    r = _cli(home, "inventory", "remove", "gpu-9", "--reason", "retired")
    assert r.returncode == 2
    assert r.stderr.startswith("error: no host 'gpu-9' in the inventory")


def test_removing_a_host_needs_a_reason_and_a_refusal_changes_nothing(
        appliance: Appliance, it_session: Session, keys: dict[str, Path], home: Path) -> None:
    """A removal is a change to a record: without --reason it is refused in one line."""
    provision_inventory.add_host(appliance, it_session, Host("gpu-5", address="10.213.7.5"),
                                 host_key_file=keys["host_pub"])
    logins = appliance.conn.execute("SELECT count(*) FROM audit_view WHERE action = "
                                    "'auth.login'").fetchone()[0]
    r = _cli(home, "inventory", "remove", "gpu-5")
    assert r.returncode == 2 and r.stderr == (
        "error: removing 'gpu-5' from the inventory needs a reason (pass --reason)\n")
    assert appliance.conn.execute("SELECT count(*) FROM audit_view WHERE action = "
                                  "'auth.login'").fetchone()[0] == logins  # refused first
    assert "gpu-5" in [h.name for h in provision_inventory.list_hosts(appliance, it_session)]
    r = _cli(home, "inventory", "remove", "gpu-5", "--reason", "moved to the other rack")
    assert r.returncode == 0, r.stderr
    [(reason, old)] = appliance.conn.execute(
        "SELECT body ->> '$.reason', body ->> '$.old.name' FROM audit_events "
        "WHERE body ->> '$.action' = 'provision.inventory.remove'").fetchall()
    assert (reason, old) == ("moved to the other rack", "gpu-5")


def test_adding_a_host_again_leaves_the_stored_hosts_key_alone(
        appliance: Appliance, it_session: Session, keys: dict[str, Path],
        tmp_path: Path) -> None:
    """The key was copied to keys/provision/<name> before the insert found the name taken,
    and the refused add then removed what it had copied: the stored host's key. Two adds
    of one name at once did the same."""
    host = Host("gpu-3", address="10.213.7.3")
    added = provision_inventory.add_host(appliance, it_session, host, key_source=keys["client"],
                                         host_key_file=keys["host_pub"])
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    with pytest.raises(InvalidInput, match="already in the inventory"):
        provision_inventory.add_host(appliance, it_session, host, key_source=other,
                                     host_key_file=keys["host_pub"])
    assert Path(added.key_file).read_bytes() == keys["client"].read_bytes()
    assert sorted(p.name for p in Path(added.key_file).parent.iterdir()) == \
        [Path(added.key_file).name]


@pytest.mark.parametrize("name", ["all", "ungrouped"])
def test_a_host_named_as_an_ansible_group_is_refused(
        appliance: Appliance, it_session: Session, keys: dict[str, Path],
        name: str) -> None:
    """A host `all` or `ungrouped` made Ansible refuse every later run's inventory
    ("creates a recursive dependency loop"), whatever host the run was for."""
    with pytest.raises(InvalidInput, match=f"host name '{name}' is reserved"):
        provision_inventory.add_host(appliance, it_session, Host(name, address="10.0.0.1"),
                                     host_key_file=keys["host_pub"])
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == [
        "localhost"]


def test_an_unresolvable_host_fails_in_one_line_giving_the_reason(
        appliance: Appliance, it_session: Session, keys: dict[str, Path]) -> None:
    """verify.yml's first task loops: the host's reason sat in each item, and the run
    said only "All items completed"."""
    provision_inventory.add_host(appliance, it_session, Host(
        "ghost", address="ghost.invalid"), host_key_file=keys["host_pub"],
        key_source=keys["client"])
    rec = provision.run(appliance, it_session, RunRequest(
        "verify.yml", "cluster", limit="ghost", timeout_s=120))
    assert rec.status == "failed"
    assert rec.hosts["ghost"]["unreachable"] == 1
    assert "\n" not in rec.failure
    assert rec.failure.startswith("ghost: Look at the installed pieces: ")
    assert "Could not resolve hostname ghost.invalid" in rec.failure, rec.failure


@pytest.mark.parametrize("address", ["-oProxyCommand", "-f", "-L8022:localhost:22"])
def test_an_address_that_ssh_would_read_as_an_option_is_refused(
        appliance: Appliance, it_session: Session, keys: dict[str, Path],
        address: str) -> None:
    """ssh-keyscan and every run's ssh got the address as an argument of their own: an
    address "-oProxyCommand" reached ssh as an option ("no argument after keyword")."""
    def no_scan(address: str, port: int) -> str:
        raise AssertionError("ran ssh-keyscan with an option for an address")
    with pytest.raises(InvalidInput, match="invalid address"):
        provision_inventory.add_host(appliance, it_session, Host("n1", address=address),
                                     scan=no_scan)
    with pytest.raises(InvalidInput, match="invalid address"):
        provision_inventory.add_host(appliance, it_session, Host("n1", address=address),
                                     host_key_file=keys["host_pub"])
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == [
        "localhost"]


@pytest.mark.parametrize("root", ["/tmp/..", "/.", "/srv/./a"])
def test_a_root_with_dot_components_is_refused(
        appliance: Appliance, it_session: Session, root: str) -> None:
    """The playbooks take any root but / for a scratch directory and skip service actions
    there: "/tmp/.." wrote the live system's files with services never started."""
    with pytest.raises(InvalidInput, match=r"appliance root .* holds \. or \.\."):
        provision_inventory.add_host(appliance, it_session, Host(
            "localhost", connection="local", appliance_root=root, python=sys.executable))
    [host] = provision_inventory.list_hosts(appliance, it_session)
    assert host.appliance_root == "/"  # the built-in default, nothing stored
