"""The hosts provisioning reaches: localhost by default, more added for a cluster.

Hosts live in the database (`provision_hosts`); each run writes them out as an Ansible
YAML inventory plus a known_hosts file in its own job directory. Host keys are pinned
when a host is added (from a file on the media, or scanned once and shown), so a run
never trusts a key it has not seen before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from appliance.canonical import canonical_bytes
from appliance.errors import InvalidInput
from appliance.provision.redaction import redact

LOCALHOST = "localhost"
INVENTORIES = ("local", "cluster")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_ADDRESS = re.compile(r"^(?!-)[A-Za-z0-9.:_-]{1,253}$")  # "-o...": an ssh option
_VAR = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# Ansible's implicit groups, the only groups a rendered inventory has (every host is in
# both): a host by either name makes every run's inventory fail to load.
GROUPS = ("all", "ungrouped")
# Ansible templates every variable it uses, on the controller, as root: a value holding
# `{{ lookup('pipe', ...) }}` runs a command. Host settings and variables are data.
TEMPLATE_MARKERS = ("{{", "{%", "{#")
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "ssh-rsa")


@dataclass(frozen=True)
class Host:
    """One inventory host. `host_keys` holds `keytype base64` lines pinned at add time."""

    name: str
    connection: str = "ssh"
    address: str = ""
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    host_keys: str = ""
    appliance_root: str = "/"
    python: str = "/usr/bin/python3"
    vars: dict[str, Any] = field(default_factory=dict)
    added_at: str | None = None
    added_by: str | None = None

    def hostvars(self) -> dict[str, Any]:
        base: dict[str, Any] = {"appliance_root": self.appliance_root,
                                "ansible_python_interpreter": self.python}
        if self.connection == "local":
            base["ansible_connection"] = "local"
        else:
            prefix = "" if self.appliance_root == "/" else self.appliance_root.rstrip("/")
            base.update({
                "ansible_connection": "ssh",
                "ansible_host": self.address,
                "ansible_port": self.port,
                "ansible_user": self.user,
                # A fixed place on the host, so nothing lands in the SSH user's home.
                "ansible_remote_tmp": f"{prefix}/var/tmp/appliance-ansible",
            })
            if self.key_file:
                base["ansible_ssh_private_key_file"] = self.key_file
            if self.user != "root":
                base["ansible_become"] = True
        return {**base, **self.vars}

    def fingerprints(self) -> list[str]:
        return [fingerprint(line) for line in self.host_keys.splitlines() if line.strip()]

    def to_dict(self) -> dict[str, Any]:
        """What listings, audit events and `--json` show: secret-named variables redacted
        (read-only roles list the inventory; only a run gets the values)."""
        return {"name": self.name, "connection": self.connection, "address": self.address,
                "port": self.port, "user": self.user, "key_file": self.key_file,
                "host_key_fingerprints": self.fingerprints(),
                "appliance_root": self.appliance_root, "python": self.python,
                "vars": redact(self.vars), "added_at": self.added_at,
                "added_by": self.added_by}


def default_localhost() -> Host:
    """The appliance itself, run with the appliance's own Python (pinned interpreter)."""
    return Host(LOCALHOST, connection="local", address="127.0.0.1", python=sys.executable)


def fingerprint(key_line: str) -> str:
    """`SHA256:...` as ssh-keygen -l prints it, for a `keytype base64` line."""
    parts = key_line.split()
    blob = base64.b64decode(parts[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{parts[0]} SHA256:{digest}"


def parse_host_keys(text: str) -> str:
    """`keytype base64` lines from known_hosts, ssh-keyscan or .pub text; others ignored."""
    keys = []
    for raw in text.splitlines():
        parts = raw.strip().split()
        for i, part in enumerate(parts[:-1]):
            if part in _KEY_TYPES:
                try:
                    base64.b64decode(parts[i + 1], validate=True)
                except ValueError:
                    break
                keys.append(f"{part} {parts[i + 1]}")
                break
    return "\n".join(sorted(set(keys)))


def scan_host_keys(address: str, port: int, timeout_s: int = 5) -> str:
    """Ask the host for its keys once (trust on first use; the fingerprints are shown)."""
    exe = shutil.which("ssh-keyscan")
    if exe is None:
        raise InvalidInput("ssh-keyscan is not installed",
                           "install openssh-client, or pass --host-key-file from the media")
    proc = subprocess.run([exe, "-T", str(timeout_s), "-p", str(port), address],
                          capture_output=True, text=True, timeout=timeout_s * 4, check=False)
    keys = parse_host_keys(proc.stdout)
    if not keys:
        raise InvalidInput(f"no SSH host key from {address}:{port}",
                           "check the address and that sshd runs there, or pass "
                           "--host-key-file")
    return keys


def validate(host: Host) -> None:
    if not _NAME.match(host.name):
        raise InvalidInput(f"invalid host name {host.name!r}",
                           "use letters, digits, dots, dashes; at most 63 characters")
    if host.name in GROUPS:
        raise InvalidInput(f"host name {host.name!r} is reserved by Ansible for a group",
                           "pass another name, and the host's address with --address")
    if host.connection not in ("local", "ssh"):
        raise InvalidInput(f"unknown connection {host.connection!r}", "use local or ssh")
    if host.connection == "ssh":
        if not _ADDRESS.match(host.address):
            raise InvalidInput(f"invalid address {host.address!r}", "pass --address IP or name")
        if not 0 < host.port < 65536:
            raise InvalidInput(f"invalid port {host.port}", "use 1-65535")
        if not _USER.match(host.user):
            raise InvalidInput(f"invalid user {host.user!r}",  # --user: the appliance login
                               "pass --ssh-user NAME, the login on that host")
        if not host.host_keys:
            raise InvalidInput(f"no pinned host key for {host.name}",
                               "pass --host-key-file or let the appliance scan it")
    for label, path in (("appliance root", host.appliance_root), ("python", host.python)):
        if not path.startswith("/"):
            raise InvalidInput(f"{label} must be an absolute path, not {path!r}")
    if {".", ".."} & set(host.appliance_root.split("/")):
        # "/tmp/.." is / itself: the roles would write the live files yet skip every
        # service action, taking the root for a scratch directory.
        raise InvalidInput(f"appliance root {host.appliance_root!r} holds . or ..",
                           "pass the directory's plain absolute path")
    for key in host.vars:
        if not _VAR.match(key) or key.startswith("ansible_"):
            raise InvalidInput(f"invalid host variable {key!r}",
                               "lower-case names; connection settings have their own options")
        if too_deep(host.vars[key]):
            raise InvalidInput(f"host variable {key!r} is nested more than {MAX_VAR_DEPTH} "
                               "deep", "pass a flatter value")
        if not recordable(host.vars[key]):
            raise InvalidInput(f"host variable {key!r} cannot be recorded in the audit trail",
                               RECORDABLE_HINT)
    check_templates(host)


MAX_VAR_DEPTH = 32  # lists and mappings inside one another: variables, not data


def too_deep(value: Any, limit: int = MAX_VAR_DEPTH) -> bool:
    """Whether `value` nests lists or mappings more than `limit` deep (counted without
    recursion: every check after this one recurses, and Python's stack is ~1000 frames)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


RECORDABLE_HINT = ("use finite numbers, whole ones within 2^53, and text without lone "
                   "surrogates (\\ud800 to \\udfff)")


def recordable(value: Any) -> bool:
    """Whether the audit trail's canonical JSON (RFC 8785) can hold `value`: not NaN, an
    infinity (JSON's 1e999 or YAML's .inf), an integer beyond 2^53 or a lone surrogate
    (a JSON "\\ud800"). Call after `too_deep`: the encoder recurses."""
    try:
        canonical_bytes(value)
    except ValueError:  # rfc8785's errors, and UnicodeEncodeError
        return False
    return True


def holds_template(value: Any) -> bool:
    """Whether any string in `value` (keys too, at any depth) could start a template."""
    if isinstance(value, str):
        return any(m in value for m in TEMPLATE_MARKERS)
    if isinstance(value, dict):
        return any(holds_template(k) or holds_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_template(v) for v in value)
    return False


def check_templates(host: Host) -> None:
    """Refuse a host whose settings or variables hold a template marker (by name only: a
    value may be a password). Every run checks its hosts again: one stored before this
    check existed must not run either."""
    for label, value in (("appliance root", host.appliance_root), ("python", host.python),
                         *((f"host variable {k!r}", v) for k, v in host.vars.items())):
        if holds_template(value):
            raise InvalidInput(f"{label} of host {host.name} holds a template marker "
                               "({{, {% or {#)",
                               "pass plain values; Ansible would run a template on the "
                               "appliance")


# -- database -----------------------------------------------------------------------

_COLUMNS = ("name", "connection", "address", "port", "user", "key_file", "host_keys",
            "appliance_root", "python", "vars", "added_at", "added_by")


def load_hosts(conn: sqlite3.Connection) -> list[Host]:
    """All hosts, localhost first (the built-in default unless one was added)."""
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM provision_hosts "
                        "ORDER BY name").fetchall()
    hosts = [Host(**{**dict(zip(_COLUMNS, r, strict=True)), "vars": json.loads(r[9])})
             for r in rows]
    local = [h for h in hosts if h.name == LOCALHOST] or [default_localhost()]
    return local + [h for h in hosts if h.name != LOCALHOST]


def insert_host(conn: sqlite3.Connection, host: Host) -> None:
    values = [getattr(host, c) for c in _COLUMNS]
    values[_COLUMNS.index("vars")] = json.dumps(host.vars, sort_keys=True)
    try:
        conn.execute(f"INSERT INTO provision_hosts ({', '.join(_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(_COLUMNS))})", values)
    except sqlite3.IntegrityError:
        raise InvalidInput(f"host {host.name} is already in the inventory",
                           f"remove it first: appliance provision inventory remove "
                           f"{host.name}") from None


def delete_host(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM provision_hosts WHERE name = ?", (name,)).rowcount > 0


def select(hosts: list[Host], inventory: str) -> list[Host]:
    if inventory == "local":
        return [h for h in hosts if h.name == LOCALHOST]
    if inventory == "cluster":
        return hosts
    raise InvalidInput(f"unknown inventory {inventory!r}", "use local or cluster")


@dataclass(frozen=True)
class RenderedInventory:
    text: str
    known_hosts: str
    digest: str
    hosts: tuple[str, ...]


def render(hosts: list[Host]) -> RenderedInventory:
    """The YAML inventory and known_hosts for a run, and one digest over both. The digest
    covers the inventory as the job keeps it once the run is scrubbed, secret-named values
    redacted: a digest over the secrets themselves would let a weak one be guessed offline
    by anyone who reads the trail."""
    data = {"all": {"hosts": {h.name: h.hostvars() for h in hosts}}}
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    kept = yaml.safe_dump({"all": {"hosts": {h.name: redact(h.hostvars()) for h in hosts}}},
                          sort_keys=True, default_flow_style=False)
    lines = []
    for h in hosts:
        if h.connection != "ssh":
            continue
        pattern = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        lines += [f"{pattern} {key}" for key in h.host_keys.splitlines() if key.strip()]
    known = "\n".join(lines) + ("\n" if lines else "")
    digest = hashlib.sha256(kept.encode() + b"\0" + known.encode()).hexdigest()
    return RenderedInventory(text, known, digest, tuple(h.name for h in hosts))
