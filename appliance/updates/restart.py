"""Restarting the serving services after a switch: one small interface.

Provisioning supplies the real implementation (`services/provision_restart.py`: its
`update.yml` playbook run through ansible-runner, the same on one host or a cluster),
chosen by `settings.provisioning.restarter`. Without it the default records what it would
restart and says so in the audit event, rather than pretending to restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from appliance.audit.events import Actor
    from appliance.context import Appliance

SERVICES = ("appliance-serving",)


@dataclass(frozen=True)
class RestartResult:
    ok: bool
    performed: bool                  # False: nothing was actually restarted
    services: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServiceRestarter(Protocol):
    def restart(self, release_dir: Path | None, reason: str) -> RestartResult: ...


@dataclass
class RecordingRestarter:
    """Records the restarts it was asked for; restarts nothing (no service manager yet)."""

    services: tuple[str, ...] = SERVICES
    calls: list[tuple[str | None, str]] = field(default_factory=list)

    def restart(self, release_dir: Path | None, reason: str) -> RestartResult:
        self.calls.append((str(release_dir) if release_dir else None, reason))
        return RestartResult(True, False, self.services,
                             "not restarted: no service manager is configured yet; recorded "
                             f"that {', '.join(self.services)} would be restarted on "
                             f"{release_dir.name if release_dir else 'no release'}")


def configured_restarter(app: Appliance, actor: Actor, terminal: str) -> ServiceRestarter:
    """The restarter `settings.provisioning.restarter` names: "ansible" runs update.yml
    through provisioning; "record" (the default) restarts nothing and says so."""
    if app.settings.provisioning.restarter == "ansible":
        # The services layer sits above the lifecycle; this is its one edge into it.
        from appliance.services.provision_restart import AnsibleRestarter
        return AnsibleRestarter(app, actor, terminal, app.settings.provisioning)
    return RecordingRestarter()
