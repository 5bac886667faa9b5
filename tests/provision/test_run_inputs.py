"""What an operator passes to a run (--limit, extra variables) cannot reach Ansible as an
option or as a connection setting: each attack here ran a command as root before."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.errors import InvalidInput
from appliance.identity.session import Session
from appliance.provision import inventory as inv
from appliance.provision.runner import Job, JobSpec, prepare_job_dir
from appliance.services import audit, provision, provision_inventory
from appliance.services.provision import RunRequest
from tests.conftest import PASSWORD

pytestmark = pytest.mark.xdist_group("provision")

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "inputs-playbooks"
    proj.mkdir()
    shutil.copy(PLAYBOOKS / "ansible.cfg", proj / "ansible.cfg")
    (proj / "hello.yml").write_text(
        "- name: Say hello\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Hello\n      ansible.builtin.debug:\n        msg: hello\n")
    return proj


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """A script that leaves proof when anything runs it (as a vault password file would)."""
    proof = tmp_path / "pwned"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {proof}\necho x\n")
    script.chmod(0o755)
    return script, proof


def _jobs(home: Path) -> list[Path]:
    return sorted((home / "jobs").glob("provision-*")) if (home / "jobs").exists() else []


@pytest.mark.parametrize("limit, says", [
    ("localhost --vault-password-file {evil} -e appliance_root=/other", "must not start"),
    ("localhost,--vault-password-file={evil}", "term 2 is not a host name or pattern"),
    ("-i/tmp/other_inventory", "must not start with - or @"),
    ("@/tmp/hosts", "must not start with - or @"),
    ("localhost:~.*", "term 2 is not a host name or pattern"),
    ("localhost\t--ssh-common-args=-oProxyCommand=x", "must not start"),
    ("gpu-9", "names no host of this inventory: 'gpu-9'"),
])
def test_a_limit_is_host_patterns_only(appliance: Appliance, it_session: Session,
                                       project: Path, home: Path, evil: tuple[Path, Path],
                                       limit: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(")):
        provision.start(appliance, it_session,
                        RunRequest("hello.yml", "local", limit=limit.format(evil=evil[0])),
                        playbooks_dir=project)
    assert not evil[1].exists()
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []


def test_a_good_limit_reaches_ansible_as_one_argument(
        appliance: Appliance, it_session: Session, project: Path) -> None:
    rec = provision.run(appliance, it_session, RunRequest("hello.yml", "local",
                                                          limit="all,!gpu-*,localhost"),
                        playbooks_dir=project)
    assert rec.status == "successful" and rec.limit == "all,!gpu-*,localhost"
    command = json.loads((Path(rec.job_dir) / "artifacts" / rec.id / "command").read_text())
    args = command["command"]
    assert args[args.index("--limit") + 1] == "all,!gpu-*,localhost"


def test_a_limited_run_shows_only_the_hosts_it_was_for(
        appliance: Appliance, it_session: Session, admin_session: Session, project: Path,
        home: Path, tmp_path: Path) -> None:
    """`--limit` ran on its hosts only, but the run's summary (the CLI's text and --json,
    the record, the audit events) listed every host of the inventory, each host outside
    the limit with zero counts, as if it had been part of the run."""
    for name in ("client", "hostkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True)
    provision_inventory.add_host(appliance, it_session, inv.Host("gpu-1", address="10.213.7.1"),
                                 key_source=tmp_path / "client",
                                 host_key_file=tmp_path / "hostkey.pub")
    shutil.copy(project / "hello.yml", project / "site.yml")  # what marks a playbook set
    env = dict(os.environ, APPLIANCE_HOME=str(home), APPLIANCE_PLAYBOOKS=str(project))
    login = ["--user", it_session.username, "--password-stdin"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance", "provision", *args, *login],
                              input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                              timeout=120)

    r = cli("run", "hello.yml", "-i", "cluster", "--limit", "!gpu-*", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "successful" and out["hosts_list"] == ["localhost", "gpu-1"]
    assert list(out["hosts"]) == ["localhost"] and out["targets"] == ["localhost"]
    assert out["hosts"]["localhost"]["ok"] == 1
    shown = cli("show", out["id"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("run hello.yml on cluster (localhost): successful")
    assert "gpu-1" not in shown.stdout
    events = audit.events(appliance, admin_session, EventFilter(target_id=out["id"]))
    assert [e.data["action"] for e in events] == ["provision.start", "provision.run"]
    for e in events:
        assert e.data["details"]["hosts"] == ["localhost"]
        assert e.data["details"]["limit"] == "!gpu-*"
    assert list(events[1].data["details"]["host_counts"]) == ["localhost"]


def test_the_runner_never_splits_a_limit_into_options(
        tmp_path: Path, project: Path, evil: tuple[Path, Path]) -> None:
    """Below the service's check: a limit with spaces is one pattern, not more options."""
    rendered = inv.render([inv.default_localhost()])
    spec = JobSpec(run_id="20260101T000000-limit0", job_dir=tmp_path / "jobs" / "job",
                   project_dir=project, playbook="hello.yml", inventory_text=rendered.text,
                   known_hosts=rendered.known_hosts, hosts=rendered.hosts,
                   limit=f"localhost --vault-password-file {evil[0]}", timeout_s=120)
    prepare_job_dir(spec)
    Job(spec, 1).run()
    assert not evil[1].exists()
    args = json.loads((spec.job_dir / "artifacts" / spec.run_id / "command").read_text()
                      )["command"]
    assert args[args.index("--limit") + 1] == spec.limit
    assert "--vault-password-file" not in args


@pytest.mark.parametrize("name", [
    "ansible_ssh_extra_args", "ansible_ssh_common_args", "ansible_connection", "ansible_host",
    "ansible_python_interpreter", "ansible_shell_executable", "ANSIBLE_become_exe",
])
def test_extra_vars_may_not_set_ansible_connection_variables(
        appliance: Appliance, it_session: Session, project: Path, home: Path,
        evil: tuple[Path, Path], name: str) -> None:
    value = f"-o ProxyCommand={evil[0]}" if "args" in name else str(evil[0])
    with pytest.raises(InvalidInput, match=f"extra variable '{name}' may not be set"):
        provision.start(appliance, it_session,
                        RunRequest("hello.yml", "local", extra_vars={name: value}),
                        playbooks_dir=project)
    assert not evil[1].exists()
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []


def test_the_become_password_may_be_passed_and_is_redacted(
        appliance: Appliance, it_session: Session, project: Path) -> None:
    rec = provision.run(appliance, it_session, RunRequest(
        "hello.yml", "local", extra_vars={"ansible_become_password": "sudo-pw-8812"}),
        playbooks_dir=project)
    assert rec.status == "successful"
    assert rec.extra_vars == {"ansible_become_password": "[redacted]"}
    stored = b"".join(p.read_bytes() for p in Path(rec.job_dir).rglob("*") if p.is_file())
    assert b"sudo-pw-8812" not in stored


def _cli_run(home: Path, session: Session, *args: str) -> subprocess.CompletedProcess:
    """`appliance provision run verify.yml -i local ARGS` as the operator types it."""
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "appliance", "provision", "run", "verify.yml",
                           "-i", "local", *args, "--user", session.username,
                           "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                          text=True, env=env, timeout=120)


def test_the_cli_refuses_an_option_in_a_limit_in_one_line(
        appliance: Appliance, it_session: Session, home: Path,
        evil: tuple[Path, Path]) -> None:
    r = _cli_run(home, it_session, "--limit", f"localhost --vault-password-file {evil[0]}")
    assert r.returncode == 2
    assert r.stderr.startswith("error: invalid --limit: it must not start with - or @ nor "
                               "hold spaces (host names or patterns") and r.stderr.count("\n") == 1
    assert str(evil[0]) not in r.stderr
    assert not evil[1].exists() and _jobs(home) == []


@pytest.mark.parametrize("extra, name", [
    ({"appliance_root": "{{ lookup('pipe', '%(evil)s') }}/tmp"}, "appliance_root"),
    ({"appliance_release": "{%% set x = lookup('pipe', '%(evil)s') %%}demo/1"},
     "appliance_release"),
    ({"appliance_runtime_packages": ["ok", {"pin": "{{ query('pipe', '%(evil)s') }}"}]},
     "appliance_runtime_packages"),
    ({"appliance_extra": {"{{ lookup('pipe', '%(evil)s') }}": 1}}, "appliance_extra"),
    ({"db_password": "p{#w"}, "db_password"),
])
def test_extra_vars_may_not_hold_templates(
        appliance: Appliance, it_session: Session, project: Path, home: Path,
        evil: tuple[Path, Path], extra: dict, name: str) -> None:
    """Ansible templates extra variables on the controller: a lookup ran a command."""
    extra = json.loads(json.dumps(extra).replace("%(evil)s", str(evil[0]))
                       .replace("%%", "%"))
    with pytest.raises(InvalidInput, match=f"extra variable '{name}' holds a template") as e:
        provision.start(appliance, it_session, RunRequest("hello.yml", "local",
                                                          extra_vars=extra),
                        playbooks_dir=project)
    assert str(evil[0]) not in str(e.value) and "p{#w" not in str(e.value)
    assert not evil[1].exists()
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []


@pytest.mark.parametrize("host", [
    {"vars": {"appliance_opt_dir": "{{ lookup('pipe', '%(evil)s') }}/x"}},
    {"vars": {"appliance_site": ["north", {"k": "{%% if lookup('pipe', '%(evil)s') %%}"}]}},
    {"appliance_root": "/{{ lookup('pipe', '%(evil)s') }}"},
    {"python": "/usr/bin/python3{# %(evil)s #}"},
])
def test_host_settings_may_not_hold_templates(
        appliance: Appliance, it_session: Session, project: Path, home: Path,
        evil: tuple[Path, Path], host: dict) -> None:
    """Ansible templates host variables as it does extra ones: a host added with
    `--var appliance_opt_dir={{ lookup('pipe', ...) }}` ran a command at the next run."""
    fields = json.loads(json.dumps(host).replace("%(evil)s", str(evil[0]))
                        .replace("%%", "%"))
    bad = inv.Host("localhost", connection="local", **{"python": sys.executable, **fields})
    with pytest.raises(InvalidInput, match="of host localhost holds a template marker") as e:
        provision_inventory.add_host(appliance, it_session, bad)
    assert str(evil[0]) not in str(e.value)
    assert provision_inventory.list_hosts(appliance, it_session)[0].vars == {}
    # One stored before the check existed is refused by every run, and nothing runs.
    with appliance.transaction():
        inv.insert_host(appliance.conn, dataclasses.replace(
            bad, added_at="2026-01-01T00:00:00.000Z", added_by="ivan"))
    with pytest.raises(InvalidInput, match="of host localhost holds a template marker"):
        provision.start(appliance, it_session, RunRequest("hello.yml", "local"),
                        playbooks_dir=project)
    assert not evil[1].exists()
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []


@pytest.mark.parametrize("name", ["appliance_root", "appliance_live", "appliance_site"])
def test_extra_vars_may_not_replace_what_the_inventory_sets(
        appliance: Appliance, it_session: Session, project: Path, home: Path,
        tmp_path: Path, name: str) -> None:
    """`-e appliance_root=/` would point a sandboxed host at the real system."""
    provision_inventory.add_host(appliance, it_session, inv.Host(
        "localhost", connection="local", appliance_root=str(tmp_path / "sandbox"),
        python=sys.executable, vars={"appliance_site": "north"}))
    with pytest.raises(InvalidInput, match=f"extra variable '{name}' may not be set: the "
                                           "inventory defines it"):
        provision.start(appliance, it_session,
                        RunRequest("hello.yml", "local", extra_vars={name: "/"}),
                        playbooks_dir=project)
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []
    # The variables the playbooks document for -e still pass.
    rec = provision.run(appliance, it_session, RunRequest(
        "hello.yml", "local", extra_vars={"appliance_release": "demo/1.0.0",
                                          "appliance_serving_profile": "vllm-cpu"}),
        playbooks_dir=project)
    assert rec.status == "successful"


def test_the_cli_refuses_a_template_in_one_line_without_echoing_it(
        appliance: Appliance, it_session: Session, home: Path,
        evil: tuple[Path, Path]) -> None:
    r = _cli_run(home, it_session, "-e",
                 f"appliance_root={{{{ lookup('pipe', '{evil[0]}; echo /tmp') }}}}")
    assert r.returncode == 2
    assert r.stderr.startswith("error: extra variable 'appliance_root' holds a template "
                               "marker") and r.stderr.count("\n") == 1
    assert str(evil[0]) not in r.stderr
    assert not evil[1].exists() and _jobs(home) == []


_BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
                for a, b in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("content, says", [
    # Nine lines of aliases: 9**9 strings once copied as JSON (MemoryError, or the OOM killer).
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + _BOMB,
     "vars.yml: aliases (*name) are not allowed at line 2, column 8"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "vars.yml: nested too deeply"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "error: extra variable 'a' is nested more than 32 deep"),
    ("a: '" + "x" * (1024 * 1024) + "'\n", "vars.yml is larger than 1048576 bytes"),
], ids=["aliases", "deep-yaml", "deep-value", "huge"])
def test_a_hostile_vars_file_is_refused_in_one_line(
        appliance: Appliance, it_session: Session, home: Path, tmp_path: Path,
        content: str, says: str) -> None:
    """A YAML bomb ran the CLI out of memory, a deeply nested file or -e value ended in a
    RecursionError traceback, and /dev/zero was read until memory ran out."""
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(content)
    r = _cli_run(home, it_session, "--vars-file", str(vars_file))
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []


def test_endless_or_deep_inputs_are_refused_in_one_line(
        appliance: Appliance, it_session: Session, home: Path) -> None:
    r = _cli_run(home, it_session, "--vars-file", "/dev/zero")
    assert r.returncode == 2 and r.stderr.startswith(
        "error: variables file /dev/zero is larger than 1048576 bytes")
    r = _cli_run(home, it_session, "-e", "x=" + "[" * 5000 + "]" * 5000)
    assert r.returncode == 2 and r.stderr == \
        "error: variable 'x' is nested too deeply (pass a flatter value)\n"
    deep: list = []
    for _ in range(400):
        deep = [deep]
    with pytest.raises(InvalidInput, match="extra variable 'x' is nested more than 32 deep"):
        provision.start(appliance, it_session, RunRequest("verify.yml", "local",
                                                          extra_vars={"x": deep}))
    local = inv.Host("localhost", connection="local", python=sys.executable)
    with pytest.raises(InvalidInput, match="host variable 'x' is nested more than 32 deep"):
        provision_inventory.add_host(appliance, it_session,
                                     dataclasses.replace(local, vars={"x": deep}))
    with pytest.raises(InvalidInput, match="host key file /dev/zero is larger than"):
        provision_inventory.add_host(appliance, it_session, inv.Host("n1", address="10.0.0.1"),
                                     host_key_file=Path("/dev/zero"))
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []
    assert [h.name for h in provision_inventory.list_hosts(appliance, it_session)] == \
        ["localhost"]


@pytest.mark.parametrize("value", ["NaN", "1e999", "-Infinity", "99999999999999999999",
                                   '"\\ud800"', '{"\\udfff": 1}'])
def test_a_value_the_audit_trail_cannot_hold_is_refused_in_one_line(
        appliance: Appliance, it_session: Session, home: Path, value: str) -> None:
    """NaN, infinities, integers beyond 2^53 and lone surrogates passed JSON and YAML but not
    the trail's canonical JSON: a traceback from the run's or the host's audit event."""
    r = _cli_run(home, it_session, "-e", f"x={value}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: extra variable 'x' cannot be recorded in the audit "
                               "trail (") and r.stderr.count("\n") == 1, r.stderr
    loaded = json.loads(value)
    local = inv.Host("localhost", connection="local", python=sys.executable)
    with pytest.raises(InvalidInput, match="host variable 'x' cannot be recorded"):
        provision_inventory.add_host(appliance, it_session,
                                     dataclasses.replace(local, vars={"x": loaded}))
    assert _jobs(home) == [] and provision.list_runs(appliance, it_session) == []
    assert provision_inventory.list_hosts(appliance, it_session)[0].vars == {}
