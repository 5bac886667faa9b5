"""Run one playbook through ansible-runner in a fresh private job directory.

What AWX taught: a fresh 0700 private data directory per job (ansible-runner reuses
options left in `env/`, so a reused one can turn a real run into a check run), the
project pointing at the installed playbooks, an environment built from nothing (the
operator's variables never reach Ansible or its artifacts), explicit timeouts, and a
cancel that kills every process of the run, not only the playbook's process group.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.provision import proctree
from appliance.provision.events import EventTracker, TaskEvent, one_line
from appliance.provision.redaction import (
    REDACTED,
    redact,
    scrub_text,
    scrub_tree,
    secret_values,
)

CANCEL_FLAG = "cancel-requested"
# A job's inputs: what ansible-runner reads, and what holds the secrets to scrub elsewhere.
EXTRAVARS = Path("env") / "extravars"
HOSTS_YML = Path("inventory") / "hosts.yml"
POLL_S = 0.2
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What ansible-runner itself must set for its event callback; nothing else of its env.
_RUNNER_KEYS = ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_RETRY_FILES_ENABLED",
                "AWX_ISOLATED_DATA_DIR", "ANSIBLE_CACHE_PLUGIN",
                "ANSIBLE_CACHE_PLUGIN_CONNECTION", "RUNNER_OMIT_EVENTS",
                "RUNNER_ONLY_FAILED_EVENTS")
REAPER = Path(__file__).with_name("reaper.py")
STATUSES = ("running", "successful", "failed", "cancelled", "timeout", "error", "interrupted")


# ansible_runner's first import is not safe from two threads at once: in one of them its
# `plugins` dict can end up replaced by its `plugins` subpackage, and that run fails at
# its start ("'module' object is not iterable"). Seen with a check-mode run started while
# another run's thread was still importing it. Runs import it under this lock.
_IMPORT_LOCK = threading.Lock()


def _ansible_runner() -> tuple[Any, Any, Callable[[], str]]:
    """ansible-runner's RunnerConfig, Runner and get_callback_dir, imported lazily (the CLI
    starts without it) and one thread at a time."""
    with _IMPORT_LOCK:
        from ansible_runner.config.runner import RunnerConfig
        from ansible_runner.runner import Runner
        from ansible_runner.utils import get_callback_dir
    return RunnerConfig, Runner, get_callback_dir


def request_cancel(job_dir: Path) -> None:
    """Ask the run in `job_dir` to stop: it polls for this flag file, so any process may."""
    (Path(job_dir) / CANCEL_FLAG).touch(mode=0o600)


@dataclass(frozen=True)
class JobSpec:
    """Everything one run needs; built by the service, independent of the database."""

    run_id: str
    job_dir: Path
    project_dir: Path
    playbook: str
    inventory_text: str
    known_hosts: str
    hosts: tuple[str, ...]
    extra_vars: dict[str, Any] = field(default_factory=dict)
    check: bool = False
    limit: str | None = None
    timeout_s: int = 3600
    task_timeout_s: int = 1800
    connect_timeout_s: int = 10


@dataclass
class JobOutcome:
    status: str
    rc: int | None
    hosts: dict[str, dict[str, Any]]
    failures: list[TaskEvent]
    duration_s: float
    artifact_dir: Path
    killed_processes: int = 0
    stopped_processes: int = 0
    error: str | None = None

    @property
    def failure_line(self) -> str | None:
        if self.failures:
            return self.failures[0].line()
        return one_line(self.error) if self.error else None


def venv_bin() -> Path:
    """The bin directory of the Python running the appliance: its own ansible-playbook."""
    return Path(sys.executable).parent


def job_environment(spec: JobSpec, ssh_control_dir: Path | None = None) -> dict[str, str]:
    """The whole environment Ansible gets: built, not inherited, so nothing secret leaks.

    With `ssh_control_dir`, SSH connections are multiplexed (one handshake per host, not
    several per task); the master processes carry the run's marker and are stopped with
    everything else when the run ends. The directory must have a short path: a control
    socket's path is limited to 107 bytes, which a job directory would exceed.
    """
    job = spec.job_dir
    ssh_args = " ".join([
        "-F none",  # no user or system ssh_config changes what we connect to
        ("-o ControlMaster=auto -o ControlPersist=120s" if ssh_control_dir
         else "-o ControlMaster=no"),
        "-o IdentitiesOnly=yes -o BatchMode=yes",
        f"-o UserKnownHostsFile={job / 'known_hosts'} -o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        f"-o ConnectTimeout={spec.connect_timeout_s}",
    ])
    env = {
        "PATH": f"{venv_bin()}:{SYSTEM_PATH}",
        "HOME": str(job / "home"),
        "TMPDIR": str(job / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_HOME": str(job / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(job / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(job / "remote-tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_TIMEOUT": str(spec.connect_timeout_s),
        "ANSIBLE_TASK_TIMEOUT": str(spec.task_timeout_s),
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_CALLBACK_PLUGINS": "",
        proctree.MARKER: spec.run_id,
    }
    if ssh_control_dir is not None:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(ssh_control_dir)
        env["ANSIBLE_SSH_CONTROL_PATH"] = "%(directory)s/%%C"
    cfg = spec.project_dir / "ansible.cfg"
    if cfg.is_file():
        env["ANSIBLE_CONFIG"] = str(cfg)
    return env


def prepare_job_dir(spec: JobSpec) -> None:
    """Create the job directory fresh (never reused) with the inputs of this run only."""
    spec.job_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    spec.job_dir.mkdir(mode=0o700)  # raises if it exists: a job dir is never reused
    for sub in ("home", "tmp", "ansible", "remote-tmp", "inventory", "env"):
        (spec.job_dir / sub).mkdir(mode=0o700)
    _write_private(spec.job_dir / HOSTS_YML, spec.inventory_text)
    _write_private(spec.job_dir / "known_hosts", spec.known_hosts)
    # Extra vars go in a file, not on the command line where `ps` would show them.
    _write_private(spec.job_dir / EXTRAVARS, json.dumps(spec.extra_vars))
    # Runner settings only take effect from this file: ansible-runner drops a `settings`
    # argument when env/settings is missing. The poll interval bounds how late a cancel
    # is seen and how long events wait for the console.
    _write_private(spec.job_dir / "env" / "settings",
                   json.dumps({"pexpect_timeout": POLL_S, "suppress_ansible_output": True}))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class Job:
    """One playbook run. `run()` blocks; `request_cancel(job_dir)` may be called from any
    process."""

    def __init__(self, spec: JobSpec, tasks_per_host: int,
                 on_events: Callable[[list[TaskEvent]], None] | None = None) -> None:
        self.spec = spec
        hidden = secret_values(spec.extra_vars) | secret_values(
            _inventory_hosts(_mapping(yaml.safe_load(spec.inventory_text))))
        self.hidden = hidden
        self.tracker = EventTracker(spec.hosts, tasks_per_host, on_events, hidden=hidden)
        self._cancelled = threading.Event()
        self._timed_out = threading.Event()
        self._deadline = 0.0
        self.killed = 0  # by a cancel
        self.stopped = 0  # left running when the playbook ended (SSH masters, daemons)

    @property
    def cancel_flag(self) -> Path:
        return self.spec.job_dir / CANCEL_FLAG

    def _poll(self) -> bool:
        # Called by ansible-runner every POLL_S while the playbook runs.
        self.tracker.flush()
        if self._cancelled.is_set() or self._timed_out.is_set():
            return True
        if self.cancel_flag.exists() or time.monotonic() > self._deadline:
            # Our timeout, not ansible-runner's: its timeout kills the reaper with the
            # process group at once, sending the orphans it holds to init; ours stops the
            # whole tree first, reaper included.
            (self._cancelled if self.cancel_flag.exists() else self._timed_out).set()
            self.killed += proctree.kill_run(self.spec.run_id)
            return True
        return False

    def run(self) -> JobOutcome:
        RunnerConfig, Runner, get_callback_dir = _ansible_runner()  # noqa: N806 - classes
        spec = self.spec
        started = time.monotonic()
        artifact_dir = spec.job_dir / "artifacts" / spec.run_id
        status, rc, error = "error", None, None
        ssh_dir: Path | None = None
        reaped = spec.job_dir / "tmp" / "reaped"
        self._deadline = started + spec.timeout_s
        try:
            # The limit goes as its own argument (ansible-runner's `limit=`), never through
            # `cmdline`, which ansible-runner splits into options.
            cmdline = "--check --diff" if spec.check else None
            if spec.known_hosts.strip():
                ssh_dir = Path(tempfile.mkdtemp(prefix="apl-ssh-", dir="/tmp"))
            ours = job_environment(spec, ssh_dir)
            config = RunnerConfig(
                private_data_dir=str(spec.job_dir), project_dir=str(spec.project_dir),
                playbook=spec.playbook, inventory=str(spec.job_dir / HOSTS_YML),
                ident=spec.run_id, quiet=True,
                limit=spec.limit or None, cmdline=cmdline, envvars=ours)
            config.prepare()
            env = dict(ours)
            env.update({k: config.env[k] for k in _RUNNER_KEYS if k in config.env})
            env["ANSIBLE_CALLBACK_PLUGINS"] = get_callback_dir()
            config.env = env
            # Under a subreaper, a task's double-forked children stay in the run's tree.
            config.command = [sys.executable, "-I", str(REAPER), str(reaped), "--",
                              *config.command]
            runner = Runner(config=config, event_handler=self.tracker.handle,
                            cancel_callback=self._poll)
            status, rc = runner.run()
        except Exception as exc:  # noqa: BLE001 - any runner failure is a run result
            error = f"{type(exc).__name__}: {exc}"
        finally:
            # Whatever ended the run, nothing it started may keep running (this also
            # ends the SSH connection masters).
            self.stopped += proctree.kill_run(spec.run_id) + _reaped_count(reaped)
            if ssh_dir is not None:
                shutil.rmtree(ssh_dir, ignore_errors=True)
            self.tracker.flush()
            scrub_job_dir(spec.job_dir, secret_values(spec.extra_vars))
        if self._cancelled.is_set():
            status = "cancelled"
        elif self._timed_out.is_set():
            status = "timeout"
        status = {"canceled": "cancelled", "unstarted": "error",
                  "starting": "error", "running": "error"}.get(status, status)
        if error is None and status == "failed" and not self.tracker.failures:
            error = _stdout_tail(artifact_dir)
        if status == "timeout":
            error = error or f"the run took longer than {spec.timeout_s} s and was stopped"
        if status == "cancelled":
            error = "cancelled by request"
        error = scrub_text(error, self.hidden) if error else error
        return JobOutcome(status, rc, self.tracker.host_counts(), list(self.tracker.failures),
                          time.monotonic() - started, artifact_dir, self.killed, self.stopped,
                          error)


def _reaped_count(path: Path) -> int:
    """How many processes the reaper found left when the playbook ended (then removed)."""
    try:
        count = int(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    path.unlink(missing_ok=True)
    return count


def job_secrets(job_dir: Path) -> set[str] | None:
    """The secret values a job's inputs hold (what `scrub_job_dir` will scrub), read without
    changing anything; None when an input cannot be read, so nothing can be filtered."""
    try:
        extravars = _mapping(json.loads((job_dir / EXTRAVARS).read_text("utf-8")))
        inventory = _mapping(yaml.safe_load((job_dir / HOSTS_YML).read_text("utf-8")))
        hosts = _inventory_hosts(inventory)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return secret_values(extravars) | secret_values(hosts)


def scrub_job_dir(job_dir: Path, known_secrets: set[str] | frozenset[str] = frozenset()
                  ) -> list[str]:
    """Leave nothing secret in a stored job: its inputs (extra vars, the inventory's host
    variables) rewritten redacted, env and command scrubbed, and no other file holding a
    secret value. The secrets are read from the inputs themselves, so whoever finds a job
    whose process died can scrub it too; `known_secrets` adds what the caller knows.

    Those files are written without fsync, so after a power loss one may be empty or cut
    short. A file that cannot be parsed cannot be filtered, so it is removed; an unreadable
    input also hides which values to scrub elsewhere, so the run's output (`artifacts/`)
    goes with it. Returns what was removed, for the record."""
    secrets = set(known_secrets)
    removed: list[str] = []

    def rewrite(path: Path, edit: Callable[[str], str]) -> bool:
        if not path.exists():
            return True
        try:
            path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
            return True
        except (OSError, ValueError, yaml.YAMLError):  # empty, partial, not what we wrote
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(job_dir)))
            return False

    def extravars(text: str) -> str:
        data = _mapping(json.loads(text))
        secrets.update(secret_values(data))
        return json.dumps(redact(data))

    def hosts_yml(text: str) -> str:
        data = _mapping(yaml.safe_load(text))
        hosts = _inventory_hosts(data)
        secrets.update(secret_values(hosts))
        # Per host: a host's name is not a variable name, even one that reads like a secret.
        data["all"]["hosts"] = {name: redact(_mapping(hv or {})) for name, hv in hosts.items()}
        return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)

    def command(text: str) -> str:
        data = _mapping(json.loads(text))
        data["env"] = _allowed_env(_mapping(data.get("env") or {}))
        return json.dumps(data)

    inputs_read = all([rewrite(job_dir / EXTRAVARS, extravars),
                       rewrite(job_dir / HOSTS_YML, hosts_yml)])
    if not inputs_read and (job_dir / "artifacts").exists():
        shutil.rmtree(job_dir / "artifacts")
        removed.append("artifacts")
    rewrite(job_dir / "env" / "envvars",
            lambda text: json.dumps(_allowed_env(_mapping(json.loads(text)))))
    for path in sorted((job_dir / "artifacts").glob("*/command")):
        rewrite(path, command)
    scrub_tree(job_dir, secrets)
    # The flag and the SSH temp files are inputs, not a record.
    (job_dir / CANCEL_FLAG).unlink(missing_ok=True)
    return removed


def _inventory_hosts(data: dict[str, Any]) -> dict[str, Any]:
    """The hosts and their variables, as `inventory.render` writes them (or damaged)."""
    return _mapping(_mapping(data.get("all")).get("hosts"))


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping (what we wrote); anything else is a damaged file."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, found {type(value).__name__}")
    return value


def _allowed_env(env: dict[str, str]) -> dict[str, str]:
    allowed = set(job_environment_keys()) | set(_RUNNER_KEYS) | {"ANSIBLE_CALLBACK_PLUGINS"}
    return {k: (v if k in allowed else REDACTED) for k, v in env.items()}


def job_environment_keys() -> tuple[str, ...]:
    return ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP",
            "ANSIBLE_REMOTE_TEMP", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_ARGS",
            "ANSIBLE_PIPELINING", "ANSIBLE_TIMEOUT", "ANSIBLE_TASK_TIMEOUT", "ANSIBLE_NOCOLOR",
            "ANSIBLE_FORCE_COLOR", "ANSIBLE_CONFIG", "ANSIBLE_SSH_CONTROL_PATH_DIR",
            "ANSIBLE_SSH_CONTROL_PATH", proctree.MARKER)


def _stdout_tail(artifact_dir: Path) -> str | None:
    """A failure with no failed task (a syntax error, a missing file): the output's end."""
    try:
        text = (artifact_dir / "stdout").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln]
    return one_line((errors or lines or ["failed with no output"])[0])
