"""A publisher's working repository: keys and thresholds per role, the last published
metadata, and the release being prepared.

Layout of DIR (the vendor's, or the appliance's own for local LoRA adapters):
  repo.json                 roles -> public keys and thresholds, expiry, last bundle version
  published/                signed metadata of the last release, every root version kept
  release/release.json      the release being prepared: bundle name, version, components
  release/targets/...       component payload copies and their model signatures
  release/metadata/...      built on the first `sign`, collecting signatures
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root

from appliance.bundle import keys as bkeys
from appliance.bundle.model import LORA_ROLE, NAME_RE, SCHEMA_VERSION, TOP_ROLES
from appliance.durable import write_atomic
from appliance.errors import InvalidInput

DEFAULT_EXPIRES_DAYS = {"root": 365, "targets": 180, "snapshot": 180, "timestamp": 90,
                        LORA_ROLE: 180}


@dataclass
class RoleKeys:
    keyids: list[str]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}


@dataclass
class RepoConfig:
    """repo.json: what the next metadata will say about roles and keys."""

    name: str
    publisher: str
    keys: dict[str, str]                      # keyid -> public PEM
    roles: dict[str, RoleKeys]                # root, targets, snapshot, timestamp
    delegations: dict[str, RoleKeys] = field(default_factory=dict)
    expires_days: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EXPIRES_DAYS))
    last_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "name": self.name,
                "publisher": self.publisher, "keys": self.keys,
                "roles": {r: k.to_dict() for r, k in self.roles.items()},
                "delegations": {r: k.to_dict() for r, k in self.delegations.items()},
                "expires_days": self.expires_days, "last_version": self.last_version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepoConfig:
        return cls(d["name"], d["publisher"], dict(d["keys"]),
                   {r: RoleKeys(list(v["keyids"]), v["threshold"]) for r, v in
                    d["roles"].items()},
                   {r: RoleKeys(list(v["keyids"]), v["threshold"]) for r, v in
                    d.get("delegations", {}).items()},
                   dict(d.get("expires_days", DEFAULT_EXPIRES_DAYS)), d.get("last_version", 0))

    def add_key(self, pem: bytes, source: str) -> str:
        public = bkeys.load_public(pem, source)
        keyid = bkeys.keyid_of(public)
        self.keys[keyid] = bkeys.public_pem(public).decode()
        return keyid


@dataclass
class ComponentSpec:
    """A component added to the release: what `add-component` was told and computed."""

    name: str
    kind: str
    role: str
    custom: dict[str, Any]        # the signed `custom` field (model.ComponentInfo.to_custom)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "role": self.role, "custom": self.custom}


@dataclass
class ReleaseSpec:
    version: int
    description: str = ""
    components: list[ComponentSpec] = field(default_factory=list)
    trusted_root: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "description": self.description,
                "components": [c.to_dict() for c in self.components],
                "trusted_root": self.trusted_root}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReleaseSpec:
        return cls(d["version"], d.get("description", ""),
                   [ComponentSpec(c["name"], c["kind"], c["role"], c["custom"])
                    for c in d["components"]], d.get("trusted_root", False))


def dump(d: Any) -> bytes:
    return (json.dumps(d, indent=1, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Repo:
    """Paths and state of a publisher's working directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "repo.json"

    @property
    def published(self) -> Path:
        return self.root / "published"

    @property
    def release_dir(self) -> Path:
        return self.root / "release"

    @property
    def release_path(self) -> Path:
        return self.release_dir / "release.json"

    @property
    def release_targets(self) -> Path:
        return self.release_dir / "targets"

    @property
    def release_metadata(self) -> Path:
        return self.release_dir / "metadata"

    def exists(self) -> bool:
        return self.config_path.exists()

    def drop_signatures(self) -> None:
        """Content changed: signatures collected so far would no longer match."""
        if self.release_metadata.exists():
            shutil.rmtree(self.release_metadata)

    def config(self) -> RepoConfig:
        if not self.exists():
            raise InvalidInput(f"{self.root} is not a bundle repository",
                               "run `appliance bundle init-repo` first")
        return RepoConfig.from_dict(json.loads(self.config_path.read_text()))

    def save_config(self, cfg: RepoConfig) -> None:
        write_atomic(self.config_path, dump(cfg.to_dict()))

    def release(self) -> ReleaseSpec:
        if self.release_path.exists():
            return ReleaseSpec.from_dict(json.loads(self.release_path.read_text()))
        return ReleaseSpec(self.config().last_version + 1)

    def save_release(self, spec: ReleaseSpec) -> None:
        write_atomic(self.release_path, dump(spec.to_dict()))

    def published_roots(self) -> list[Metadata[Root]]:
        """Every published root, oldest first."""
        if not self.published.exists():
            return []
        versions = sorted(int(p.name.split(".")[0]) for p in self.published.glob("*.root.json"))
        return [Metadata[Root].from_bytes((self.published / f"{v}.root.json").read_bytes())
                for v in versions]

    def published_version(self, role: str) -> int:
        path = self.published / f"{role}.json"
        if not path.exists():
            return 0
        return Metadata.from_bytes(path.read_bytes()).signed.version


def check_name(name: str, what: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(f"invalid {what} {name!r}",
                           "use lowercase letters, digits, '.', '_' or '-' (at most 64)")
    return name


def check_roles(roles: dict[str, RoleKeys]) -> None:
    for role in TOP_ROLES:
        rk = roles.get(role)
        if rk is None or not rk.keyids:
            raise InvalidInput(f"role {role} has no keys", f"pass --{role}-key")
        if not 1 <= rk.threshold <= len(rk.keyids):
            raise InvalidInput(f"role {role}: threshold {rk.threshold} with "
                               f"{len(rk.keyids)} keys", "choose 1 <= threshold <= keys")
