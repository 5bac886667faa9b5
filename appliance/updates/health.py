"""Health checks after the switch: one interface, several checks, all run every time.

Here: the release directory re-verifies against the signed digests, its serving
configuration names the approved profile, and that profile still fits this host's GPUs.
The serving layer adds its endpoint and a smoke prompt from the golden set as further
`HealthCheck`s. A check that raises counts as failed: a broken check must not pass.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from appliance.hardware import GpuSource, read_inventory, replayed_note
from appliance.hardware.profiles import EngineProfile, check_profile
from appliance.updates.fit import SERVING_FILE
from appliance.updates.releases import ReleaseDirs


@dataclass(frozen=True)
class HealthContext:
    releases: ReleaseDirs
    rel: str                                    # the release now behind `current`
    files: list[tuple[str, str, int]]           # signed (relpath, sha256, size)
    profile: EngineProfile
    bundle_digest: str
    generated: Mapping[str, bytes]   # serving.json as the records generate it
    source: GpuSource | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HealthCheck(Protocol):
    name: str

    def check(self, ctx: HealthContext) -> CheckResult: ...


class ReleaseDigests:
    name = "release_digests"

    def check(self, ctx: HealthContext) -> CheckResult:
        target = ctx.releases.read_current()
        if target != ctx.rel:
            return CheckResult(self.name, False, f"current points to {target}, not {ctx.rel}")
        problems = ctx.releases.verify(ctx.rel, ctx.files, ctx.generated)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            return CheckResult(self.name, False, "; ".join(problems[:3]) + more)
        return CheckResult(self.name, True, f"{len(ctx.files)} files match their signed "
                           "SHA-256")


class ServingConfig:
    name = "serving_config"

    def check(self, ctx: HealthContext) -> CheckResult:
        path = ctx.releases.path_of(ctx.rel) / SERVING_FILE
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return CheckResult(self.name, False, f"{SERVING_FILE} unreadable: {exc}")
        if cfg.get("bundle_digest") != ctx.bundle_digest:
            return CheckResult(self.name, False, f"{SERVING_FILE} belongs to another bundle")
        if cfg.get("profile", {}).get("id") != ctx.profile.id:
            return CheckResult(self.name, False, f"{SERVING_FILE} names profile "
                               f"{cfg.get('profile', {}).get('id')}, approved {ctx.profile.id}")
        return CheckResult(self.name, True, f"{cfg['runtime']} with profile {ctx.profile.id}")


class ProfileFits:
    name = "hardware_profile"

    def check(self, ctx: HealthContext) -> CheckResult:
        inventory = read_inventory(ctx.source)
        verdict = check_profile(ctx.profile, inventory)
        # "fits 8 H100" from a replayed reading is no word about this host: say so.
        return CheckResult(self.name, verdict.fits,
                           verdict.reason + replayed_note(inventory.source))


def default_checks() -> list[HealthCheck]:
    return [ReleaseDigests(), ServingConfig(), ProfileFits()]


def run_checks(checks: list[HealthCheck], ctx: HealthContext, timeout_s: float = 300
               ) -> list[CheckResult]:
    """Every check, each given `timeout_s`: one that hangs (a GPU driver that stopped
    answering, a serving endpoint that never replies) has failed when its time is up, and
    an answer that comes later is ignored, so a late success never passes the install."""
    return [_run_one(c, ctx, timeout_s) for c in checks]


def _run_one(check: HealthCheck, ctx: HealthContext, timeout_s: float) -> CheckResult:
    name = getattr(check, "name", type(check).__name__)
    answer: queue.SimpleQueue[CheckResult] = queue.SimpleQueue()

    def run() -> None:
        try:
            answer.put(check.check(ctx))
        except Exception as exc:  # noqa: BLE001 - any crash of a check is a failed check
            answer.put(CheckResult(name, False,
                                   f"the check crashed: {type(exc).__name__}: {exc}"))

    # A daemon thread: a check stuck in the kernel cannot be stopped, only abandoned.
    threading.Thread(target=run, name=f"health-{name}", daemon=True).start()
    try:
        return answer.get(timeout=timeout_s)
    except queue.Empty:
        return CheckResult(name, False, f"no answer within {timeout_s:g} s (timed out)")

