"""Runs end to end: a forced failure through the CLI, secrets kept out of artifacts,
cancel leaving no process behind, permissions, and runs whose process died."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import db
from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.errors import (
    AuditFailure,
    InvalidInput,
    PermissionDenied,
    ProvisionFailed,
    RunConflict,
    SessionExpired,
)
from appliance.identity.session import Session
from appliance.provision import proctree, records
from appliance.provision.inventory import Host
from appliance.provision.records import RunRecord
from appliance.provision.runner import request_cancel
from appliance.services import audit, auth, provision, provision_inventory
from appliance.services.provision import RunRequest
from tests.conftest import ADMIN, PASSWORD, SteppingClock
from tests.provision.kit import live_processes, make_root, site_vars

# One xdist worker runs every provisioning test: they are CPU-bound playbook runs,
# and test_site_localhost shares one converged root across its tests.
pytestmark = pytest.mark.xdist_group("provision")

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
SECRET = "Zq7-s3cret-value-91"
ENV_SECRET = "env-token-5531-not-for-ansible"
SLEEP_A, SLEEP_B = "sleep 3217", "sleep 3218"
DAEMON = "sleep 3219"


@pytest.fixture
def test_playbooks(tmp_path: Path) -> Path:
    """A project dir beside the real one for behaviour the real playbooks must not have."""
    proj = tmp_path / "test-playbooks"
    proj.mkdir()
    shutil.copy(PLAYBOOKS / "ansible.cfg", proj / "ansible.cfg")
    (proj / "leak.yml").write_text(
        "- name: Echo what must not be stored\n  hosts: all\n  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Print the password and the operator's environment\n"
        "      ansible.builtin.debug:\n"
        "        msg: \"pw={{ db_password }} env={{ lookup('env', 'APPLIANCE_TEST_TOKEN') }}\"\n")
    (proj / "slow.yml").write_text(
        "- name: Start children that outlive their parent\n  hosts: all\n"
        "  gather_facts: false\n  tasks:\n"
        "    - name: Start a daemon that leaves the run's tree and clears its environment\n"
        f"      ansible.builtin.shell: \"setsid nohup env -i {DAEMON} >/dev/null 2>&1 &\"\n"
        "      changed_when: false\n"
        f"    - name: Sleep in a grandchild\n      ansible.builtin.shell: "
        f"\"{SLEEP_A} & {SLEEP_B}\"\n      changed_when: false\n")
    return proj


def test_forced_failure_is_one_line_naming_host_and_task(
        appliance: Appliance, it_session: Session, tmp_path: Path, home: Path,
        wheelhouse: Path) -> None:
    root = make_root(tmp_path)
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", appliance_root=str(root), python=sys.executable))
    args = [f"--var={k}={json.dumps(v)}" for k, v in site_vars(
        wheelhouse, appliance_min_memory_mb=99_999_999).items()]
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    r = subprocess.run([sys.executable, "-m", "appliance", "provision", "run", "site.yml",
                        "-i", "local", *args, "--user", "ivan", "--password-stdin"],
                       input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 11, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: run site.yml failed: localhost: preflight : Fail naming "
                             "what is missing: preflight: memory ")
    assert "need 99999999 MiB" in err[0] and "see `appliance provision show" in err[0]
    # The live task list was printed as the run went, the failure with its message.
    assert "failed      localhost  preflight : Fail naming what is missing" in r.stdout
    rec = provision.list_runs(appliance, it_session)[0]
    assert rec.status == "failed" and rec.hosts["localhost"]["failed"] == 1
    assert not (root / "opt").exists()  # nothing after preflight ran
    ended = audit.events(appliance, auth.login(appliance, ADMIN, PASSWORD),
                         EventFilter(action="provision.run"), limit=5)
    assert ended[-1].data["outcome"] == "failure"
    assert ended[-1].data["reason"] == rec.failure


def test_secrets_stay_out_of_the_job_directory(
        appliance: Appliance, it_session: Session, test_playbooks: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_TEST_TOKEN", ENV_SECRET)
    runs = [provision.run(appliance, it_session,
                          RunRequest("leak.yml", "local", False, {"db_password": SECRET}),
                          playbooks_dir=test_playbooks) for _ in range(2)]
    assert [r.status for r in runs] == ["successful", "successful"]
    assert runs[0].job_dir != runs[1].job_dir  # a fresh private directory per run
    job = Path(runs[0].job_dir)
    assert stat.S_IMODE(job.stat().st_mode) == 0o700
    everything = b"".join(p.read_bytes() for p in job.rglob("*") if p.is_file())
    assert b"pw=[redacted] env=" in everything  # the task ran and printed, then scrubbed
    assert SECRET.encode() not in everything and ENV_SECRET.encode() not in everything
    command = json.loads((job / "artifacts" / runs[0].id / "command").read_text())
    assert "APPLIANCE_TEST_TOKEN" not in command["env"]
    assert command["env"]["ANSIBLE_HOME"].startswith(str(job))
    assert command["env"]["ANSIBLE_REMOTE_TEMP"].startswith(str(job))
    assert command["env"]["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert json.loads((job / "env" / "extravars").read_text()) == {"db_password": "[redacted]"}
    assert not (Path(os.environ["HOME"]) / ".ansible").exists()  # ANSIBLE_HOME is the job's
    assert runs[0].extra_vars == {"db_password": "[redacted]"}
    listed = {a.name for a in provision.list_artifacts(appliance, it_session, runs[0].id)}
    assert f"artifacts/{runs[0].id}/stdout" in listed and "env/extravars" in listed
    with pytest.raises(InvalidInput):
        provision.read_artifact(appliance, it_session, runs[0].id, "../../appliance.db")


def test_a_secret_named_dict_leaves_no_inner_value_in_the_job(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    """leak.yml prints the whole value: its inner strings reach stdout and job events."""
    rec = provision.run(appliance, it_session, RunRequest(
        "leak.yml", "local", False, {"db_password": {"value": SECRET, "also": [ENV_SECRET]}}),
        playbooks_dir=test_playbooks)
    assert rec.status == "successful"
    assert rec.extra_vars == {"db_password": "[redacted]"}
    everything = b"".join(p.read_bytes() for p in Path(rec.job_dir).rglob("*") if p.is_file())
    assert b"pw={" in everything and b"[redacted]" in everything  # printed, then scrubbed
    assert SECRET.encode() not in everything and ENV_SECRET.encode() not in everything


def test_host_secrets_are_listed_redacted_and_leave_no_trace_in_the_job(
        appliance: Appliance, it_session: Session, make_user, test_playbooks: Path,
        home: Path) -> None:
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", python=sys.executable,
        vars={"db_password": SECRET, "appliance_site": "north"}))
    auditor = make_user(["auditor"], username="ada")
    listed = provision_inventory.list_hosts(appliance, auditor)[0]
    assert listed.vars == {"db_password": "[redacted]", "appliance_site": "north"}
    assert listed.to_dict()["vars"]["db_password"] == "[redacted]"
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    cli = subprocess.run([sys.executable, "-m", "appliance", "provision", "inventory", "list",
                          "--json", "--user", "ada", "--password-stdin"],
                         input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)[0]["vars"]["db_password"] == "[redacted]"
    assert SECRET not in cli.stdout
    rec = provision.run(appliance, it_session, RunRequest("leak.yml", "local"),
                        playbooks_dir=test_playbooks)
    assert rec.status == "successful"
    job = Path(rec.job_dir)
    everything = b"".join(p.read_bytes() for p in job.rglob("*") if p.is_file())
    assert b"pw=[redacted]" in everything  # the task used the value, then it was scrubbed
    assert SECRET.encode() not in everything
    hosts = provision.read_artifact(appliance, auditor, rec.id, "inventory/hosts.yml").text
    assert "db_password: '[redacted]'" in hosts and "appliance_site: north" in hosts
    # The recorded digest covers what is kept (nothing to guess a secret from offline).
    kept = (job / "inventory" / "hosts.yml").read_bytes() + b"\0" + \
        (job / "known_hosts").read_bytes()
    assert rec.inventory_digest == hashlib.sha256(kept).hexdigest()


def test_cancel_kills_the_whole_tree_and_records_it(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    seen: list = []
    handle = provision.start(appliance, it_session, RunRequest("slow.yml", "local"),
                             seen.extend, playbooks_dir=test_playbooks)
    deadline = time.monotonic() + 60

    def started() -> bool:
        # The task's start event reaches us through Ansible's main process, which may
        # print it after the module's children are already running: wait for both.
        return any(e.kind == "started" and e.task == "Sleep in a grandchild"
                   for e in list(seen))

    while not (started() and live_processes(SLEEP_A) and live_processes(SLEEP_B)):
        assert time.monotonic() < deadline, "the sleeping task never started"
        time.sleep(0.1)
    assert proctree.run_processes(handle.run_id)  # found by marker and parent links
    asked = time.monotonic()
    provision.cancel(appliance, it_session, handle.run_id, "testing cancel")
    rec = handle.wait(60)
    assert rec.status == "cancelled"
    # The run polls for the cancel flag every 0.2 s (ansible-runner's default is 5 s).
    assert time.monotonic() - asked < 4
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []
    assert live_processes(DAEMON) == []  # orphaned, re-parented and env-less: still found
    assert live_processes(rec.job_dir) == []
    assert proctree.run_processes(rec.id) == set()
    admin = auth.login(appliance, ADMIN, PASSWORD)
    cancel = audit.events(appliance, admin, EventFilter(action="provision.cancel"))
    assert cancel[-1].data["reason"] == "testing cancel"
    ended = audit.events(appliance, admin, EventFilter(action="provision.run"))[-1].data
    assert ended["details"]["status"] == "cancelled" and ended["outcome"] == "failure"
    assert ended["details"]["killed_processes"] >= 2
    with pytest.raises(InvalidInput, match="already ended"):
        provision.cancel(appliance, it_session, rec.id)


def test_a_result_that_cannot_be_recorded_says_the_run_happened(
        appliance: Appliance, it_session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The playbook has run when its result is recorded: a database held by another writer
    past the wait must not end in "nothing was changed", the hint of an action refused."""
    proj, flag = tmp_path / "hold-playbooks", tmp_path / "go"
    proj.mkdir()
    shutil.copy(PLAYBOOKS / "ansible.cfg", proj / "ansible.cfg")
    (proj / "hold.yml").write_text(
        "- name: Wait for the test\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Wait for the flag file\n      ansible.builtin.wait_for:\n"
        f"        path: {flag}\n        timeout: 60\n")
    handle = provision.start(appliance, it_session, RunRequest("hold.yml", "local"),
                             playbooks_dir=proj)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)  # the result's connection waits 0.3 s
    holder = sqlite3.connect(appliance.layout.db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, holding on past that
    try:
        flag.touch()
        with pytest.raises(AuditFailure) as failed:
            handle.wait(60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert failed.value.message.startswith(
        f"run {handle.run_id} ended successful, but its result could not be recorded: ")
    assert "nothing was changed" not in str(failed.value)
    assert failed.value.hint.startswith("the hosts may have changed")
    assert f"provision show {handle.run_id}" in failed.value.hint


def test_a_second_run_changing_a_host_in_use_is_refused(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    """Two runs changing localhost at once would leave it as neither playbook meant: the
    second is refused in one line naming the first, and nothing of it is kept. A check-mode
    run changes nothing and goes beside it; once the first has ended the host is free."""
    (test_playbooks / "quick.yml").write_text(
        "- name: Say hello\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Hello\n      ansible.builtin.debug:\n        msg: hello\n")
    first = provision.start(appliance, it_session, RunRequest("slow.yml", "local"),
                            playbooks_dir=test_playbooks)
    try:
        jobs = sorted(p.name for p in appliance.layout.jobs.iterdir())
        for limit in (None, "localhost", "local*"):
            with pytest.raises(RunConflict) as err:
                provision.start(appliance, it_session,
                                RunRequest("quick.yml", "local", limit=limit),
                                playbooks_dir=test_playbooks)
            assert str(err.value) == (
                f"run {first.run_id} (slow.yml, started by {it_session.username}) is still "
                "changing localhost (wait for that run to finish, or cancel it: "
                "`appliance provision cancel RUN`)")
        assert sorted(p.name for p in appliance.layout.jobs.iterdir()) == jobs
        assert [r.id for r in records.running(appliance.conn)] == [first.run_id]
        check = provision.start(appliance, it_session,
                                RunRequest("slow.yml", "local", check=True),
                                playbooks_dir=test_playbooks)
        done = check.wait(120)
        assert done.status == "successful", done.failure
    finally:
        provision.cancel(appliance, it_session, first.run_id, "test over")
        assert first.wait(60).status == "cancelled"
    after = provision.run(appliance, it_session, RunRequest("quick.yml", "local"),
                          playbooks_dir=test_playbooks)
    assert after.status == "successful"


def _started_with_a_secret(appliance: Appliance, it_session: Session, make_user,
                           test_playbooks: Path, playbook: str
                           ) -> tuple[provision.RunHandle, Session]:
    """A run given the become password, and an auditor to browse it while it goes on."""
    handle = provision.start(appliance, it_session, RunRequest(
        playbook, "local", extra_vars={"ansible_become_password": SECRET}),
        playbooks_dir=test_playbooks)
    return handle, make_user(["auditor"], username="ada")


def test_no_file_of_a_running_run_is_shown(
        appliance: Appliance, it_session: Session, make_user, test_playbooks: Path) -> None:
    """Until the run ends and scrubs its job dir, env/extravars holds the become password
    and inventory/hosts.yml the host secrets in clear; auditors may browse runs."""
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", python=sys.executable,
        vars={"db_password": ENV_SECRET}))
    handle, auditor = _started_with_a_secret(appliance, it_session, make_user,
                                             test_playbooks, "slow.yml")
    try:
        _wait_for_sleeps()
        assert SECRET.encode() in (Path(handle.record.job_dir) / "env/extravars").read_bytes()
        assert provision.list_artifacts(appliance, auditor, handle.run_id) == []
        for name in ("env/extravars", "inventory/hosts.yml", f"artifacts/{handle.run_id}/stdout"):
            with pytest.raises(InvalidInput, match=f"run {handle.run_id} has not ended"
                               ) as refused:
                provision.read_artifact(appliance, auditor, handle.run_id, name)
            assert SECRET not in str(refused.value)
    finally:
        provision.cancel_started(appliance, handle, "test done")
        rec = handle.wait(60)
    assert rec.status == "cancelled"
    listed = {a.name for a in provision.list_artifacts(appliance, auditor, rec.id)}
    assert {"env/extravars", "inventory/hosts.yml"} <= listed
    shown = provision.read_artifact(appliance, auditor, rec.id, "env/extravars").text
    assert json.loads(shown) == {"ansible_become_password": "[redacted]"}
    hosts = provision.read_artifact(appliance, auditor, rec.id, "inventory/hosts.yml").text
    assert "db_password: '[redacted]'" in hosts and ENV_SECRET not in hosts


def test_a_running_runs_events_show_no_secret(
        appliance: Appliance, it_session: Session, make_user, test_playbooks: Path) -> None:
    """A failed task's message quotes the become password while the run goes on: the
    replayed events an auditor sees mid-run (the run's history view) have it hidden."""
    (test_playbooks / "quote.yml").write_text(
        "- name: Quote a secret, then keep running\n  hosts: all\n  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Fail, then carry on\n      block:\n"
        "        - name: Fail quoting it\n          ansible.builtin.fail:\n"
        "            msg: \"pw={{ ansible_become_password }}\"\n"
        "      rescue:\n"
        f"        - name: Sleep\n          ansible.builtin.shell: \"{SLEEP_A} & {SLEEP_B}\"\n"
        "          changed_when: false\n")
    handle, auditor = _started_with_a_secret(appliance, it_session, make_user,
                                             test_playbooks, "quote.yml")
    try:
        _wait_for_sleeps()
        [failed] = [e for e in provision.run_events(appliance, auditor, handle.run_id)
                    if e.kind == "failed"]
        assert failed.message == "pw=[redacted]"
    finally:
        provision.cancel_started(appliance, handle, "test done")
        assert handle.wait(60).status == "cancelled"


def test_a_failure_quoting_a_secret_is_recorded_without_it(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    """The failure line went as Ansible wrote it into the run's record, its audit event and
    the live events: a message quoting the become password, a task name a host secret."""
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", python=sys.executable,
        vars={"db_password": ENV_SECRET}))
    (test_playbooks / "quote.yml").write_text(
        "- name: Quote secrets\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Fail on {{ db_password }}\n      ansible.builtin.fail:\n"
        "        msg: \"pw={{ ansible_become_password }}\"\n")
    seen: list = []
    rec = provision.run(appliance, it_session, RunRequest(
        "quote.yml", "local", extra_vars={"ansible_become_password": SECRET}), seen.extend,
        playbooks_dir=test_playbooks)
    assert rec.status == "failed"
    assert rec.failure == "localhost: Fail on [redacted]: pw=[redacted]"
    [failed] = [e for e in seen if e.kind == "failed"]
    assert (failed.task, failed.message) == ("Fail on [redacted]", "pw=[redacted]")
    assert SECRET not in json.dumps([e.to_dict() for e in seen])
    assert ENV_SECRET not in json.dumps([e.to_dict() for e in seen])
    assert records.get(appliance.conn, rec.id).failure == rec.failure
    trail = [e.text for e in audit.events(appliance, auth.login(appliance, ADMIN, PASSWORD),
                                          EventFilter(target_id=rec.id))]
    assert any("pw=[redacted]" in t for t in trail)
    assert not any(SECRET in t or ENV_SECRET in t for t in trail)


def _cli_run(home: Path, test_playbooks: Path, *extra: str) -> subprocess.Popen:
    """`appliance provision run slow.yml` as an operator's shell starts it: SIGINT at its
    default, whatever this test process inherited (a job started with `&` by a shell
    without job control ignores SIGINT, and Python then leaves it ignored)."""
    (test_playbooks / "site.yml").write_text("[]\n")  # marks the dir as a playbooks dir
    env = dict(os.environ, APPLIANCE_HOME=str(home), APPLIANCE_PLAYBOOKS=str(test_playbooks))
    cli = subprocess.Popen([sys.executable, "-m", "appliance", "provision", "run", "slow.yml",
                            "-i", "local", *extra, "--user", "ivan", "--password-stdin"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    cli.stdin.write(PASSWORD + "\n")
    cli.stdin.close()
    return cli


def _stop_everything(cli: subprocess.Popen, appliance: Appliance, session: Session) -> None:
    """Whatever a failed assertion left running must not outlive the test: later tests
    look for the same sleeping processes."""
    cli.kill()
    cli.wait()
    for rec in provision.list_runs(appliance, session):
        proctree.kill_run(rec.id)


def _wait_for_sleeps() -> None:
    deadline = time.monotonic() + 60
    while not (live_processes(SLEEP_A) and live_processes(SLEEP_B)):
        assert time.monotonic() < deadline, "the sleeping task never started"
        time.sleep(0.1)


def test_the_starter_stops_a_run_that_outlasted_the_idle_limit(
        appliance: Appliance, it_session: Session, test_playbooks: Path,
        clock: SteppingClock) -> None:
    handle = provision.start(appliance, it_session, RunRequest("slow.yml", "local"),
                             playbooks_dir=test_playbooks)
    try:
        _wait_for_sleeps()
        clock.advance(minutes=appliance.settings.session.idle_minutes + 1)
        with pytest.raises(SessionExpired):  # a session's own cancel needs a live session
            provision.cancel(appliance, it_session, handle.run_id, "by session")
        provision.cancel_started(appliance, handle, "interrupted at the terminal")
        rec = handle.wait(60)
    finally:  # never leave a run behind, whatever failed above
        request_cancel(Path(handle.record.job_dir))
        handle.join(60)
    assert rec.status == "cancelled"
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []
    admin = auth.login(appliance, ADMIN, PASSWORD)
    ev = audit.events(appliance, admin, EventFilter(action="provision.cancel"))[-1].data
    assert ev["actor"]["username"] == "ivan" and ev["target"]["id"] == rec.id
    assert ev["reason"] == "interrupted at the terminal"
    with pytest.raises(InvalidInput, match="already ended"):
        provision.cancel_started(appliance, handle)


def test_ctrl_c_at_the_cli_stops_the_run_in_one_line(
        appliance: Appliance, it_session: Session, test_playbooks: Path, home: Path) -> None:
    cli = _cli_run(home, test_playbooks)
    try:
        _wait_for_sleeps()
        cli.send_signal(signal.SIGINT)
        cli.wait(timeout=60)
    finally:
        _stop_everything(cli, appliance, it_session)
    err = cli.stderr.read()
    assert cli.returncode == 11, err
    assert err.startswith("error: run slow.yml cancelled: cancelled by request (see `")
    assert err.count("\n") == 1 and "nothing was changed" not in err
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []
    admin = auth.login(appliance, ADMIN, PASSWORD)
    ev = audit.events(appliance, admin, EventFilter(action="provision.cancel"))[-1].data
    assert ev["actor"]["username"] == "ivan"
    assert ev["details"]["by"] == "the run's own handle"  # not the (expirable) session


def test_only_it_may_run_and_a_denial_leaves_nothing(
        appliance: Appliance, make_user, home: Path) -> None:
    auditor = make_user(["auditor"])
    with pytest.raises(PermissionDenied):
        provision.start(appliance, auditor, RunRequest("site.yml", "local"))
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
    assert provision.list_runs(appliance, auditor) == []  # auditors may read history
    admin = auth.login(appliance, ADMIN, PASSWORD)
    denied = audit.events(appliance, admin, EventFilter(action="access.denied"))[-1].data
    assert denied["details"]["permission"] == "provision.run"
    with pytest.raises(InvalidInput, match="unknown playbook"):
        provision.start(appliance, make_user(["it"]), RunRequest("../site.yml", "local"))


def test_a_run_whose_process_died_is_closed_as_interrupted(
        appliance: Appliance, it_session: Session, home: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    rec = RunRecord(
        id="20260101T000000-dead00", playbook="site.yml", inventory="local",
        inventory_digest="0" * 64, hosts_list=("localhost",), check=False, extra_vars={},
        limit=None, status="running", started_at="2026-01-01T00:00:00.000Z",
        started_by="ivan", finished_at=None, duration_s=None, rc=None, hosts={},
        failure=None, job_dir=str(home / "jobs" / "gone"), owner_host=os.uname().nodename,
        owner_pid=dead.pid, owner_start=None)
    with appliance.transaction():
        records.insert(appliance.conn, rec)
    assert provision.get_run(appliance, it_session, rec.id).status == "interrupted"
    with pytest.raises(InvalidInput, match="already ended \\(interrupted\\)"):
        provision.cancel(appliance, it_session, rec.id)
    stored = records.get(appliance.conn, rec.id)
    assert stored.status == "interrupted" and stored.finished_at is not None


def test_a_killed_run_is_reaped_with_its_secrets_scrubbed(
        appliance: Appliance, it_session: Session, test_playbooks: Path, home: Path) -> None:
    cli = _cli_run(home, test_playbooks, "-e", f"become_password={SECRET}")
    try:
        _wait_for_sleeps()
        cli.kill()  # as a power loss or kill -9 would: no finally, no scrub
        cli.wait()
        rec = provision.list_runs(appliance, it_session)[0]
        job = Path(rec.job_dir)
        assert SECRET.encode() in (job / "env" / "extravars").read_bytes()  # what was left
        with pytest.raises(InvalidInput, match="already ended \\(interrupted\\)"):
            provision.cancel(appliance, it_session, rec.id)  # any service entry reaps
    finally:
        _stop_everything(cli, appliance, it_session)
    assert records.get(appliance.conn, rec.id).status == "interrupted"
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []
    everything = b"".join(p.read_bytes() for p in job.rglob("*") if p.is_file())
    assert SECRET.encode() not in everything
    assert json.loads((job / "env" / "extravars").read_text()) == \
        {"become_password": "[redacted]"}


@pytest.mark.parametrize("damaged, gone", [
    ("artifacts/{id}/command", ["artifacts/{id}/command"]),
    # An input naming the secrets is cut short: what it named cannot be found elsewhere,
    # so the run's output goes with it.
    ("env/extravars", ["env/extravars", "artifacts"]),
    ("inventory/hosts.yml", ["inventory/hosts.yml", "artifacts"]),
])
def test_a_killed_run_with_a_damaged_job_file_is_reaped_and_the_next_run_runs(
        appliance: Appliance, it_session: Session, test_playbooks: Path, home: Path,
        damaged: str, gone: list[str]) -> None:
    """After a power loss, files written without fsync may be empty or partial: the
    next start reaps the dead run all the same instead of failing on it forever."""
    cli = _cli_run(home, test_playbooks, "-e", f"become_password={SECRET}")
    try:
        _wait_for_sleeps()
        cli.kill()
        cli.wait()
        dead = provision.list_runs(appliance, it_session)[0]
        job = Path(dead.job_dir)
        path = job / damaged.format(id=dead.id)
        path.write_text(path.read_text()[:7])  # cut short, as an unflushed write leaves it
        rec = provision.run(appliance, it_session,
                            RunRequest("leak.yml", "local", False, {"db_password": "x1234"}),
                            playbooks_dir=test_playbooks)
    finally:
        _stop_everything(cli, appliance, it_session)
    assert rec.status == "successful"
    stored = records.get(appliance.conn, dead.id)
    assert stored.status == "interrupted"
    assert stored.failure.endswith(
        "removed from its job directory as unreadable or unscrubbable: "
        + ", ".join(g.format(id=dead.id) for g in gone))
    for g in gone:
        assert not (job / g.format(id=dead.id)).exists()
    everything = b"".join(p.read_bytes() for p in job.rglob("*") if p.is_file())
    assert SECRET.encode() not in everything
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []


def test_a_run_past_its_timeout_is_stopped_with_its_children(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    handle = provision.start(appliance, it_session,
                             RunRequest("slow.yml", "local", timeout_s=12),
                             playbooks_dir=test_playbooks)
    seen = False
    while not handle.join(0.1):
        seen = seen or bool(live_processes(SLEEP_B))
    assert seen, "the sleeping task never started before the timeout"
    rec = handle.wait()
    assert rec.status == "timeout"
    assert rec.failure == "the run took longer than 12 s and was stopped"
    assert live_processes(SLEEP_A) == [] and live_processes(SLEEP_B) == []
    assert live_processes(DAEMON) == []
    assert proctree.run_processes(rec.id) == set()


def test_a_daemon_left_by_a_finished_run_is_stopped_and_counted(
        appliance: Appliance, it_session: Session, test_playbooks: Path) -> None:
    (test_playbooks / "daemon.yml").write_text(
        "- name: Leave a daemon behind\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Start a daemon that clears its environment\n"
        "      ansible.builtin.shell: \"setsid nohup env -i sleep 3220 >/dev/null 2>&1 &\"\n"
        "      changed_when: false\n")
    rec = provision.run(appliance, it_session, RunRequest("daemon.yml", "local"),
                        playbooks_dir=test_playbooks)
    assert rec.status == "successful"
    assert live_processes("sleep 3220") == []
    admin = auth.login(appliance, ADMIN, PASSWORD)
    ended = audit.events(appliance, admin, EventFilter(action="provision.run"))[-1].data
    assert ended["details"]["stopped_processes"] >= 1
    assert not (Path(rec.job_dir) / "tmp" / "reaped").exists()


def test_text_output_shows_brackets_as_ansible_wrote_them(
        appliance: Appliance, it_session: Session, test_playbooks: Path, home: Path) -> None:
    """`emit` prints text as is, never as markup: the rich escapes these commands still
    added showed as backslashes (`ok: \\[localhost]`, a failure's `\\[gpu]`)."""
    (test_playbooks / "site.yml").write_text("[]\n")  # marks the dir as a playbooks dir
    (test_playbooks / "brackets.yml").write_text(
        "- name: Fail with brackets\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Need [gpu]\n      ansible.builtin.fail:\n"
        "        msg: \"missing [gpu] on [host]\"\n")
    env = dict(os.environ, APPLIANCE_HOME=str(home), APPLIANCE_PLAYBOOKS=str(test_playbooks))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance", "provision", *args,
                               "--user", "ivan", "--password-stdin"], input=PASSWORD + "\n",
                              capture_output=True, text=True, env=env, timeout=300)

    r = cli("run", "brackets.yml", "-i", "local")
    assert r.returncode == 11, r.stderr
    failure = "failure: localhost: Need [gpu]: missing [gpu] on [host]"
    assert failure in r.stdout and "\\[" not in r.stdout
    run_id = provision.list_runs(appliance, it_session)[0].id
    shown = cli("show", run_id)
    assert shown.returncode == 0 and failure in shown.stdout and "\\[" not in shown.stdout
    assert "failed      localhost  Need [gpu]" in cli("show", run_id, "--events").stdout
    runs = cli("runs")
    assert "localhost: Need [gpu]: missing [gpu] on [host]" in runs.stdout
    stdout = f"artifacts/{run_id}/stdout"
    page = cli("artifacts", run_id, stdout)
    assert page.returncode == 0 and "TASK [Need [gpu]]" in page.stdout
    assert "\\[" not in page.stdout


@pytest.mark.parametrize("args, says", [
    (("--limit", "-5"), "error: cannot list -5 runs (use --limit 1 to 1000)"),
    (("--limit", "0"), "error: cannot list 0 runs (use --limit 1 to 1000)"),
    (("--before", "nosuch"), "error: no provisioning run 'nosuch' (list runs with "
                             "`appliance provision runs`)"),
])
def test_a_hostile_runs_listing_is_refused_in_one_line(
        appliance: Appliance, it_session: Session, test_playbooks: Path, home: Path,
        args: tuple[str, ...], says: str) -> None:
    """A negative --limit listed every run (SQLite's LIMIT -5 is no limit), and an unknown
    --before run said "No runs yet." with exit 0."""
    for _ in range(2):
        provision.run(appliance, it_session, RunRequest("leak.yml", "local"),
                      playbooks_dir=test_playbooks)
    env = dict(os.environ, APPLIANCE_HOME=str(home))
    r = subprocess.run([sys.executable, "-m", "appliance", "provision", "runs", *args,
                        "--user", "ivan", "--password-stdin"], input=PASSWORD + "\n",
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == says + "\n"
    newest, older = provision.list_runs(appliance, it_session)
    assert provision.list_runs(appliance, it_session, 1) == [newest]
    assert provision.list_runs(appliance, it_session, 5, newest.id) == [older]
    assert provision.list_runs(appliance, it_session, 5, older.id) == []


@pytest.fixture
def full_jobs_dir(home: Path, appliance: Appliance) -> Path:
    """The jobs directory on a small filesystem filled to the last block (root only)."""
    jobs = home / "jobs"
    jobs.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(jobs)],
            capture_output=True).returncode != 0:
        pytest.skip("needs to mount a small tmpfs (root)")
    try:
        with contextlib.suppress(OSError), (jobs / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        yield jobs
    finally:
        subprocess.run(["umount", "-l", str(jobs)], check=False)


def test_a_full_jobs_dir_refuses_the_run_and_keeps_nothing(
        appliance: Appliance, it_session: Session, test_playbooks: Path,
        full_jobs_dir: Path) -> None:
    """A full disk stopped prepare_job_dir half-way: a traceback, and a job dir no one
    would scrub, its inventory holding the host secrets, was left behind."""
    provision_inventory.add_host(appliance, it_session, Host(
        "localhost", connection="local", python=sys.executable,
        vars={"db_password": ENV_SECRET}))
    with pytest.raises(ProvisionFailed, match="cannot prepare the run's job directory: No "
                                              "space left on device") as refused:
        provision.start(appliance, it_session, RunRequest(
            "leak.yml", "local", extra_vars={"ansible_become_password": SECRET}),
            playbooks_dir=test_playbooks)
    assert "nothing was run or recorded" in refused.value.hint
    assert [p.name for p in full_jobs_dir.iterdir()] == ["filler"]
    assert provision.list_runs(appliance, it_session) == []
    admin = auth.login(appliance, ADMIN, PASSWORD)
    assert audit.events(appliance, admin, EventFilter(action="provision.start")) == []
