"""The update lifecycle's `ServiceRestarter` through provisioning: update.yml points each
host's `current` at the release and restarts serving through its handler, as a recorded
provisioning run (`provision.start`, `provision.run`) under the actor of the install,
rollback or recovery that needed it. Chosen by `settings.provisioning.restarter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.audit.events import Actor
from appliance.context import Appliance
from appliance.provision.events import TaskEvent
from appliance.services import provision
from appliance.settings import ProvisioningPolicy
from appliance.updates.restart import SERVICES, RestartResult

# The serving role's handlers (playbooks/roles/serving/handlers/main.yml): the first runs
# on a live host (appliance_root /), the second says the restart was skipped elsewhere.
RESTART_HANDLER = "Restart serving"
SKIPPED_HANDLER = "Note the restart that was skipped"


@dataclass
class AnsibleRestarter:
    app: Appliance
    actor: Actor
    terminal: str
    policy: ProvisioningPolicy
    playbooks_dir: Path | None = None

    def restart(self, release_dir: Path | None, reason: str) -> RestartResult:
        if release_dir is None:
            # update.yml can point `current` at a release, not take it away.
            return RestartResult(True, False, SERVICES,
                                 "not restarted: no release to serve; update.yml was not run "
                                 "and the hosts' current links are as they were")
        extra = ({"appliance_release_dir": str(release_dir)}
                 if self.policy.release_source == "home"
                 else {"appliance_release": f"{release_dir.parent.name}/{release_dir.name}"})
        request = provision.RunRequest(provision.UPDATE_PLAYBOOK, self.policy.inventory,
                                       False, extra, None, self.policy.timeout_s)
        seen: list[TaskEvent] = []
        handle = provision.start_update_step(self.app, self.actor, self.terminal, request,
                                             reason, seen.extend,
                                             playbooks_dir=self.playbooks_dir)
        rec = handle.wait()
        where = f"update.yml run {rec.id} on {', '.join(rec.hosts_list)}"
        if rec.status != "successful":
            return RestartResult(False, False, SERVICES,
                                 f"{where} {rec.status}: {rec.failure or 'no task failed'}")
        ran = {e.task for e in seen if e.handler and e.kind in ("ok", "changed")}
        if RESTART_HANDLER in ran:
            return RestartResult(True, True, SERVICES, f"{where}: serving restarted")
        if SKIPPED_HANDLER in ran:
            return RestartResult(True, False, SERVICES,
                                 f"{where}: release placed; serving restart skipped "
                                 "(appliance_root is not /)")
        return RestartResult(True, False, SERVICES,
                             f"{where}: nothing changed, so serving was not restarted")
