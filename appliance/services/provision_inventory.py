"""The provisioning inventory: the hosts playbooks run on. Adding one copies its SSH key
into the appliance (the media may go) and pins its host key; each change is an audit event
with the host as it was or became (variables redacted)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from appliance.audit.events import Event
from appliance.context import Appliance
from appliance.durable import write_atomic
from appliance.errors import InvalidInput
from appliance.identity.session import Session
from appliance.provision import inventory as inv
from appliance.provision.redaction import redact
from appliance.services.access import authorize
from appliance.text import one_line

MAX_HOST_KEY_FILE = 1024 * 1024  # bytes: a few key lines, or a known_hosts file


def list_hosts(app: Appliance, session: Session) -> list[inv.Host]:
    """Every host, secret-named variables redacted: any role with `provision.view` lists
    them, and only a run needs the values (it loads them itself)."""
    authorize(app, session, "provision.view")
    return [replace(h, vars=redact(h.vars)) for h in inv.load_hosts(app.conn)]


def add_host(app: Appliance, session: Session, host: inv.Host, *,
             key_source: Path | None = None, host_key_file: Path | None = None,
             scan: Callable[[str, int], str] = inv.scan_host_keys) -> inv.Host:
    """Add a host. Its SSH key is copied into the appliance (the media may go); its host
    key is pinned from `host_key_file`, else scanned once and its fingerprint recorded."""
    actor = authorize(app, session, "provision.run", target_type="provision_host",
                      target_id=host.name)
    if host.name == inv.LOCALHOST:
        host = replace(host, connection="local", address="127.0.0.1")
    copied: Path | None = None
    if key_source is not None and not key_source.is_file():  # before asking the network
        raise InvalidInput(f"no SSH key file {key_source}",
                           "pass --key the private key file on the media")
    if host.connection == "ssh":
        if host_key_file is not None:
            try:
                with host_key_file.open("rb") as fh:  # bounded: /dev/zero never ends
                    raw = fh.read(MAX_HOST_KEY_FILE + 1)
                if len(raw) > MAX_HOST_KEY_FILE:
                    raise InvalidInput(f"host key file {host_key_file} is larger than "
                                       f"{MAX_HOST_KEY_FILE} bytes",
                                       "pass a known_hosts line or the host's .pub key file")
                keys = inv.parse_host_keys(raw.decode("utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not a text file"
                raise InvalidInput(f"cannot read host key file {host_key_file}: {why}",
                                   "pass a known_hosts line or the host's .pub key file"
                                   ) from exc
            if not keys:
                raise InvalidInput(f"no SSH host key in {host_key_file}",
                                   "pass a known_hosts line or the host's .pub key file")
        else:
            inv.validate(replace(host, host_keys="pending"))
            keys = scan(host.address, host.port)
        host = replace(host, host_keys=keys)
    host = replace(host, added_at=app.clock.iso(), added_by=session.username)
    inv.validate(host)
    if key_source is not None:
        copied = _copy_key(app, host.name, key_source)
        host = replace(host, key_file=str(copied))
    try:
        with app.transaction():
            inv.insert_host(app.conn, host)
            app.trail.append(Event(
                action="provision.inventory.add", actor=actor, target_type="provision_host",
                target_id=host.name, new=host.to_dict(),
                terminal=session.terminal))
    except BaseException:
        if copied is not None:
            copied.unlink(missing_ok=True)
        raise
    return host


def _copy_key(app: Appliance, name: str, source: Path) -> Path:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read SSH key {source}: {exc.strerror}",
                           "pass the private key file from the media") from exc
    if b"PRIVATE KEY" not in data:
        raise InvalidInput(f"{source} is not an SSH private key",
                           "pass the private key, not the .pub file")
    keys_dir = app.layout.keys / "provision"
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A name of its own per add: the host's name alone was overwritten by an add the
    # inventory then refused (the name taken, by a stored host or one added meanwhile),
    # whose clean-up removed the stored host's key.
    dest = keys_dir / f"{name}-{uuid.uuid4().hex[:12]}"
    write_atomic(dest, data)  # mode 0600, as mkstemp makes it
    return dest


def removal_reason(name: str, reason: str | None) -> str:
    """Removing a host is a change to a record: it needs its reason (one line)."""
    if not (reason or "").strip():
        raise InvalidInput(f"removing {name!r} from the inventory needs a reason",
                           "pass --reason")
    return one_line(reason, "the reason")


def remove_host(app: Appliance, session: Session, name: str, reason: str) -> None:
    """Remove a stored host, with the reason for it."""
    actor = authorize(app, session, "provision.run", target_type="provision_host",
                      target_id=name)
    reason = removal_reason(name, reason)
    old = next((h for h in inv.load_hosts(app.conn) if h.name == name), None)
    with app.transaction():
        if not inv.delete_host(app.conn, name):
            if name == inv.LOCALHOST:  # listed, but built in: nothing stored to remove
                raise InvalidInput(f"{inv.LOCALHOST} is built in: every inventory holds "
                                   "this server, so it cannot be removed",
                                   f"change its settings with `appliance provision "
                                   f"inventory add {inv.LOCALHOST} --root ...`; removing "
                                   "what was added restores the defaults")
            raise InvalidInput(f"no host {name!r} in the inventory",
                               "see `appliance provision inventory list`")
        app.trail.append(Event(
            action="provision.inventory.remove", actor=actor, target_type="provision_host",
            target_id=name, reason=reason,
            old=old.to_dict() if old else None,
            terminal=session.terminal))
    if old is not None and old.key_file and \
            Path(old.key_file).parent == app.layout.keys / "provision":
        Path(old.key_file).unlink(missing_ok=True)
