"""The content store's upkeep: which objects must stay, and reclaiming the disk of the rest.

Model weights are large and the appliance's disk is not: the objects of bundles that can
never be installed again (REJECTED, ROLLED_BACK) and objects that no bundle records (left
by an interrupted import that was never resumed) can be removed. Everything a live bundle,
a release directory or an open install needs stays. Bundle records and their audit history
are never touched; a reclaimed bundle is simply no longer on disk.

The store lock is held while the reclaim decides and removes, and an import holds it from
its copy until its record commits, so neither sees the other half-way. The audit event is
committed before the first object is removed (fail closed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.audit.events import Event
from appliance.bundle.store import ContentStore
from appliance.context import Appliance
from appliance.errors import ApplianceError, InvalidInput
from appliance.identity.session import Session
from appliance.services.access import authorize
from appliance.text import one_line

# States from which a bundle can never be installed again (see updates/lifecycle.py).
FINISHED = ("REJECTED", "ROLLED_BACK")

# Every object a bundle still needs: one that is not finished, or that a release directory
# or an open install journal row points at.
_KEPT = f"""
SELECT DISTINCT json_extract(f.value, '$[1]')
FROM bundle_components c JOIN bundles b ON b.id = c.bundle_id, json_each(c.files) f
WHERE b.state NOT IN ({", ".join(f"'{s}'" for s in FINISHED)})
   OR b.id IN (SELECT bundle_id FROM releases WHERE status IN ('current', 'kept'))
   OR b.id IN (SELECT bundle_id FROM install_journal WHERE open = 1)
   OR b.id IN (SELECT from_bundle_id FROM install_journal WHERE open = 1)
"""

# Which finished bundles own an object (for the report: whose disk comes back).
_OWNERS = """
SELECT b.name || '@' || b.version, json_extract(f.value, '$[1]')
FROM bundle_components c JOIN bundles b ON b.id = c.bundle_id, json_each(c.files) f
"""


class ReclaimFailed(ApplianceError):
    exit_code = 1
    hint = "check the appliance home's disk and permissions, then reclaim again"


@dataclass(frozen=True)
class ReclaimResult:
    dry_run: bool
    objects: int            # removed (or, in a dry run, that would be)
    bytes: int
    kept_objects: int
    kept_bytes: int
    bundles: list[str] = field(default_factory=list)   # finished bundles whose objects go
    unrecorded: int = 0     # objects no bundle records (an import never resumed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reclaim(app: Appliance, session: Session, reason: str, dry_run: bool = False
            ) -> ReclaimResult:
    """Remove every stored object no live bundle needs; `dry_run` only says what would go."""
    actor = authorize(app, session, "store.reclaim", target_type="store", target_id="content")
    if not dry_run and not reason.strip():
        raise InvalidInput("reclaiming disk space needs a reason", "pass --reason")
    reason = one_line(reason, "the reason")
    store = ContentStore(app.layout.store)
    with store.lock() as held:
        kept = {d for (d,) in app.conn.execute(_KEPT)}
        owners: dict[str, set[str]] = {}
        for ref, digest in app.conn.execute(_OWNERS):
            owners.setdefault(digest, set()).add(ref)
        on_disk = store.objects_on_disk()
        doomed = [(d, size) for d, size in on_disk if d not in kept]
        result = ReclaimResult(
            dry_run=dry_run, objects=len(doomed), bytes=sum(s for _, s in doomed),
            kept_objects=len(on_disk) - len(doomed),
            kept_bytes=sum(s for d, s in on_disk if d in kept),
            bundles=sorted({ref for d, _ in doomed for ref in owners.get(d, ())}),
            unrecorded=sum(1 for d, _ in doomed if d not in owners))
        if dry_run or not doomed:
            return result
        with app.transaction():
            app.trail.append(Event(
                action="store.reclaim", actor=actor, target_type="store", target_id="content",
                reason=reason, details=_details(result), terminal=session.terminal))
        try:
            store.discard([d for d, _ in doomed], held)
        except OSError as exc:
            left = sum(1 for d, _ in doomed if store.has(d))
            with app.transaction():
                app.trail.append(Event(
                    action="store.reclaim", actor=actor, target_type="store",
                    target_id="content", outcome="failure", reason=reason,
                    details={**_details(result), "not_removed": left, "error": str(exc)},
                    terminal=session.terminal))
            raise ReclaimFailed(f"reclaim stopped with {left} of {len(doomed)} objects left: "
                                f"{exc.strerror or exc}") from exc
    return result


def _details(result: ReclaimResult) -> dict[str, Any]:
    return {"objects": result.objects, "bytes": result.bytes, "kept_objects":
            result.kept_objects, "kept_bytes": result.kept_bytes,
            "bundles": result.bundles, "unrecorded": result.unrecorded}
