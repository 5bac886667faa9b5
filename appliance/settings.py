"""Typed appliance settings, kept in `config.json` in the appliance home.

Policies (passwords, lockout, sessions, checkpoints) are configuration, not code, so a
hospital's quality unit can set them and the setting in force is visible and recorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from appliance.errors import InvalidInput


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 12
    history: int = 5
    max_age_days: int = 90          # 0 disables expiry
    scrypt_n: int = 2**15           # memory-hard cost; 2**15 * r=8 needs 32 MiB per hash


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5
    window_minutes: int = 15
    lock_minutes: int = 30          # a security officer may unlock sooner


@dataclass(frozen=True)
class SessionPolicy:
    idle_minutes: int = 15


@dataclass(frozen=True)
class AuditPolicy:
    checkpoint_every_events: int = 1000
    checkpoint_every_seconds: int = 300


@dataclass(frozen=True)
class ApprovalPolicy:
    required_admin_signatures: int = 1

    def __post_init__(self) -> None:
        # 0 would let an update be installed with no administrator's signature at all.
        n = self.required_admin_signatures
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"approval.required_admin_signatures is {n!r}",
                               "use 1 or more: every installed update needs an "
                               "administrator's signature")


@dataclass(frozen=True)
class EvaluationGates:
    """Thresholds the evaluation evidence a bundle carries must meet (metric -> bound).

    `min_metrics` are lower bounds (accuracy-like), `max_metrics` upper bounds (error rates).
    A gate names metrics the evidence must contain; a missing metric fails the gate.
    """

    require_evidence: bool = True
    min_metrics: dict[str, float] = field(default_factory=dict)
    max_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdatePolicy:
    keep_releases: int = 2          # the active release and the ones before it, for rollback
    health_check_timeout_s: int = 300   # a check that has not answered by then has failed
    # The TensorRT-LLM version serving runs (an engine runs only on the version that built
    # it). "" means: the installed tensorrt_llm package's, else not checked (serving may
    # run in its own container, with a runtime this process cannot see).
    trtllm_runtime: str = ""

    def __post_init__(self) -> None:
        n = self.health_check_timeout_s
        if isinstance(n, bool) or not isinstance(n, int | float) or not 0 < n <= 86400:
            raise InvalidInput(f"updates.health_check_timeout_s is {n!r}",
                               "use 1 to 86400 seconds")


RESTARTERS = ("record", "ansible")
MAX_RUN_TIMEOUT_S = 24 * 3600  # the longest a provisioning run may be given
RELEASE_SOURCES = ("home", "root")


@dataclass(frozen=True)
class ProvisioningPolicy:
    """How an install or rollback restarts serving.

    `restarter`: "record" (the default: restarts nothing and says so) or "ansible" (runs
    update.yml through provisioning on `inventory`, each host's appliance_root from the
    inventory). `release_source`: "home" points each host's `current` at this appliance's
    release directory (one server); "root" at `<appliance_root>/var/lib/appliance/releases/
    <name>/<version>` on each host (a cluster, where every host holds the release).
    """

    restarter: str = "record"
    inventory: str = "local"
    release_source: str = "home"
    timeout_s: int = 1800

    def __post_init__(self) -> None:
        for name, value, allowed in (("restarter", self.restarter, RESTARTERS),
                                     ("release_source", self.release_source, RELEASE_SOURCES),
                                     ("inventory", self.inventory, ("local", "cluster"))):
            if value not in allowed:
                raise InvalidInput(f"provisioning.{name} is {value!r}",
                                   f"use one of: {', '.join(allowed)}")
        if not isinstance(self.timeout_s, int) or not 0 < self.timeout_s <= MAX_RUN_TIMEOUT_S:
            raise InvalidInput(f"provisioning.timeout_s is {self.timeout_s!r}",
                               f"use 1 to {MAX_RUN_TIMEOUT_S} seconds")


@dataclass(frozen=True)
class Settings:
    password: PasswordPolicy = field(default_factory=PasswordPolicy)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    session: SessionPolicy = field(default_factory=SessionPolicy)
    audit: AuditPolicy = field(default_factory=AuditPolicy)
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    evaluation: EvaluationGates = field(default_factory=EvaluationGates)
    updates: UpdatePolicy = field(default_factory=UpdatePolicy)
    provisioning: ProvisioningPolicy = field(default_factory=ProvisioningPolicy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        if not isinstance(data, dict):
            raise InvalidInput("the config file must hold a JSON object")
        parts = {}
        for f in fields(cls):
            section = data.get(f.name, {})
            if not isinstance(section, dict):
                raise InvalidInput(f"config section {f.name!r} must be an object")
            sub = f.default_factory()  # type: ignore[misc]
            known = {sf.name for sf in fields(sub)}
            unknown = set(section) - known
            if unknown:
                raise InvalidInput(f"unknown config keys in {f.name!r}: {sorted(unknown)}",
                                   f"known keys: {sorted(known)}")
            for key, value in section.items():
                _check_type(f"{f.name}.{key}", value, getattr(sub, key))
            parts[f.name] = type(sub)(**{**asdict(sub), **section})
        return cls(**parts)


def _check_type(name: str, value: Any, default: Any) -> None:
    """A value of its default's type (a bool is no number; a gate maps names to numbers),
    so a quoted number fails here in one line, not as a TypeError at the first login."""
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if isinstance(default, dict):
        ok = isinstance(value, dict) and all(isinstance(k, str) and number(v)
                                             for k, v in value.items())
        want = "an object of metric names to numbers"
    elif isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    else:
        ok, want = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise InvalidInput(f"{name} is {value!r}, not {want}",
                           "fix config.json or restore it from the installer media")


def load_settings(path: Path) -> Settings:
    if not path.exists():
        return Settings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        what = f"cannot be read: {exc.strerror}" if isinstance(exc, OSError) else \
            f"is not valid JSON: {exc}"
        raise InvalidInput(f"config file {path} {what}",
                           "fix the file or restore it from the installer media") from exc
    return Settings.from_dict(data)


def save_settings(path: Path, settings: Settings) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
