"""The appliance's trusted TUF metadata, root history included, kept in its database.

Keeping it beside the audit trail means a trust change and the audit event that records it
commit in one transaction: a refused import cannot leave half-updated trust behind, and a
successful one cannot update trust without its event. Nothing here trusts media; callers
store only metadata that python-tuf verified.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root, Targets

from appliance.bundle.model import LORA_ROLE, MAX_ROOT, ROLE_KINDS, TOP_ROLES
from appliance.errors import InvalidInput
from appliance.text import shown


@dataclass(frozen=True)
class TrustState:
    """The current trusted metadata: newest root plus the newest of every other role, and
    every root version held (old root files on media are compared with them)."""

    root: bytes
    others: dict[str, bytes]      # role name -> bytes (timestamp, snapshot, targets, ...)
    root_history: dict[int, bytes] = field(default_factory=dict)   # version -> bytes

    def root_md(self) -> Metadata[Root]:
        return Metadata[Root].from_bytes(self.root)


def read_root_file(path: Path) -> bytes:
    """The bytes of a root file given to `trust init`: a regular file of at most the media
    limit for root metadata. Opened without blocking and checked by its open descriptor,
    so a FIFO or device cannot hang the command and a huge file is never read whole."""
    hint = "pass --root with the root.json from the installer media"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"cannot read {shown(str(path))}: {exc.strerror}", hint) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput(f"{shown(str(path))} is not a regular file", hint)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_ROOT + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {shown(str(path))}: {exc.strerror}",
                               hint) from None
    if len(data) > MAX_ROOT:
        raise InvalidInput(f"{shown(str(path))} is over the {MAX_ROOT}-byte limit for root "
                           "metadata", hint)
    return data


def fingerprint(data: bytes) -> str:
    """SHA-256 of a root file, grouped for reading aloud against the paper copy."""
    h = hashlib.sha256(data).hexdigest().upper()
    return " ".join(h[i:i + 4] for i in range(0, len(h), 4))


def is_initialised(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM trust_metadata WHERE role = 'root' LIMIT 1"
                        ).fetchone() is not None


def current(conn: sqlite3.Connection) -> TrustState | None:
    rows = conn.execute(
        "SELECT t.role, t.body FROM trust_metadata t JOIN (SELECT role, MAX(version) AS v "
        "FROM trust_metadata GROUP BY role) m ON t.role = m.role AND t.version = m.v"
    ).fetchall()
    files = {role: bytes(body) for role, body in rows}
    root = files.pop("root", None)
    if root is None:
        return None
    return TrustState(root, files, dict(root_history(conn)))


def versions(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT role, MAX(version) FROM trust_metadata GROUP BY role"))


def root_history(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
    return [(v, bytes(b)) for v, b in conn.execute(
        "SELECT version, body FROM trust_metadata WHERE role = 'root' ORDER BY version")]


def conflict(conn: sqlite3.Connection, files: list[tuple[str, bytes]]) -> str | None:
    """The first of `files` whose (role, version) is already trusted with other bytes, as
    "role vN", or None. An import checks this while verifying, so such a release (a key
    rotation that re-signs an old version, say) is refused, never half-stored."""
    for role, body in files:
        version = Metadata.from_bytes(body).signed.version
        row = conn.execute("SELECT sha256 FROM trust_metadata WHERE role = ? AND version = ?",
                           (role, version)).fetchone()
        if row is not None and row[0] != hashlib.sha256(body).hexdigest():
            return f"{role} v{version}"
    return None


def store(conn: sqlite3.Connection, files: list[tuple[str, bytes]], ts: str) -> list[str]:
    """Record newly trusted metadata inside the caller's transaction; returns what was new.

    A (role, version) already held with the same bytes is skipped; with other bytes it is
    an error, because versions identify content once trusted (callers refuse that earlier,
    with `conflict`; this is the last guard).
    """
    added = []
    for role, body in files:
        version = Metadata.from_bytes(body).signed.version
        digest = hashlib.sha256(body).hexdigest()
        row = conn.execute("SELECT sha256 FROM trust_metadata WHERE role = ? AND version = ?",
                           (role, version)).fetchone()
        if row is not None:
            if row[0] != digest:
                raise sqlite3.IntegrityError(f"{role} v{version} already trusted with other "
                                             "content")
            continue
        conn.execute("INSERT INTO trust_metadata (role, version, body, sha256, stored_at) "
                     "VALUES (?, ?, ?, ?, ?)", (role, version, body, digest, ts))
        added.append(f"{role} v{version}")
    return added


def describe(state: TrustState, now: datetime) -> dict[str, Any]:
    """What `appliance trust show` prints: roles, keys, thresholds, expiry, who publishes what."""
    root = state.root_md().signed
    roles: list[dict[str, Any]] = []
    for name in TOP_ROLES:
        role = root.roles[name]
        md_bytes = state.root if name == "root" else state.others.get(name)
        signed = Metadata.from_bytes(md_bytes).signed if md_bytes else None
        roles.append({"role": name, "threshold": role.threshold, "keyids": list(role.keyids),
                      "version": signed.version if signed else None,
                      "expires": signed.expires.isoformat() if signed else None,
                      "expired": signed.is_expired(now) if signed else None,
                      "delegated_by": "root"})
    targets_bytes = state.others.get("targets")
    publishers = [{"role": "targets", "kinds": sorted(ROLE_KINDS["targets"]),
                   "keyids": list(root.roles["targets"].keyids), "paths": ["*"]}]
    if targets_bytes:
        targets = Metadata[Targets].from_bytes(targets_bytes).signed
        delegations = targets.delegations
        for name, drole in ((delegations.roles or {}).items() if delegations else []):
            signed_bytes = state.others.get(name)
            signed = Metadata.from_bytes(signed_bytes).signed if signed_bytes else None
            roles.append({"role": name, "threshold": drole.threshold,
                          "keyids": list(drole.keyids),
                          "version": signed.version if signed else None,
                          "expires": signed.expires.isoformat() if signed else None,
                          "expired": signed.is_expired(now) if signed else None,
                          "delegated_by": "targets"})
            publishers.append({"role": name, "kinds": sorted(ROLE_KINDS.get(name, ())),
                               "keyids": list(drole.keyids), "paths": list(drole.paths or [])})
    keys = [{"keyid": keyid, "type": key.keytype, "scheme": key.scheme,
             "roles": [r["role"] for r in roles if keyid in r["keyids"]]}
            for keyid, key in root.keys.items()]
    if targets_bytes:
        targets = Metadata[Targets].from_bytes(targets_bytes).signed
        if targets.delegations is not None:
            for keyid, key in targets.delegations.keys.items():
                keys.append({"keyid": keyid, "type": key.keytype, "scheme": key.scheme,
                             "roles": [r["role"] for r in roles if keyid in r["keyids"]]})
    return {"root_version": root.version, "root_fingerprint": fingerprint(state.root),
            "consistent_snapshot": root.consistent_snapshot, "roles": roles, "keys": keys,
            "publishers": publishers, "appliance_role": LORA_ROLE}
