"""Hardware actions: read the GPU inventory, record it, and choose the engine that fits.

A fit is recorded as a `hardware.fit` audit event with every candidate's reason (11.10(h)),
including refusals, and with where the reading came from: a replayed reading is visible as such.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.audit.events import Event
from appliance.context import Appliance
from appliance.durable import StagedFile
from appliance.errors import ApplianceError, InvalidInput
from appliance.hardware import GpuInventory, GpuSource, read_inventory, reading_bytes
from appliance.hardware.catalog import read_engines_dir
from appliance.hardware.profiles import EngineProfile, Selection, select_profile
from appliance.identity.session import Session
from appliance.services.access import authorize
from appliance.text import one_line


def show(app: Appliance, session: Session, source: GpuSource | None = None) -> GpuInventory:
    """The host's GPUs. Viewing changes nothing, so it is not an audit event."""
    authorize(app, session, "hardware.view", target_type="host", target_id="gpus")
    return read_inventory(source)


_NEW_FILE = "pass --out a new file path in an existing, writable directory"


def record(app: Appliance, session: Session, out: Path, source: GpuSource | None = None,
           note: str | None = None) -> GpuInventory:
    """Write this host's reading to a new file, so that a real machine can become a fixture.
    Never over an existing file (a mistyped --out must not replace the signing key or the
    database): it is written beside `out` and renamed into place once its event commits, so
    a failed write records nothing and nothing lands unrecorded."""
    actor = authorize(app, session, "hardware.view", target_type="host", target_id="gpus")
    # Kept in the reading, which refuses a control character when it is read back.
    note = one_line(note, "the note") if note else None
    out = Path(out)
    if out.is_dir():
        raise InvalidInput(f"could not write the reading to {out}: Is a directory", _NEW_FILE)
    if os.path.lexists(out):
        raise InvalidInput(f"{out} already exists",
                           "readings never overwrite; choose a new file name for --out")
    inventory = read_inventory(source)
    staged = StagedFile(out, overwrite=False)
    try:
        with staged.open() as f:
            f.write(reading_bytes(inventory, note))
            f.flush()
            os.fsync(f.fileno())
        with app.transaction():
            app.trail.append(Event(
                action="hardware.record", actor=actor, target_type="host", target_id="gpus",
                details={"out": str(out), "summary": inventory.summary(),
                         "source": inventory.source}, terminal=session.terminal))
        staged.commit()
    except OSError as exc:
        staged.discard()
        raise InvalidInput(f"could not write the reading to {out}: {exc.strerror or exc}",
                           _NEW_FILE) from exc
    except BaseException:
        staged.discard()
        raise
    return inventory


def fit(app: Appliance, session: Session, profiles: list[EngineProfile] | Path,
        pinned: str | None = None, supported_trtllm: set[str] | None = None,
        source: GpuSource | None = None, target_id: str | None = None,
        target_digest: str | None = None) -> Selection:
    """Choose the engine profile that fits this host, and record why.

    `profiles` is a list (from a verified bundle) or a directory of engines (see
    `hardware.catalog`). An engine that contradicts its declared profile is refused and the
    refusal recorded. A selection with no profile chosen is returned, not raised, so that
    callers can show every reason; it is recorded with outcome "failure". A fit for a
    bundle names its digest (`target_digest`), as every update event does.
    """
    target = target_id or (str(profiles) if isinstance(profiles, Path) else "profiles")
    actor = authorize(app, session, "hardware.view", target_type="engines", target_id=target)
    inventory = read_inventory(source)
    named = {"bundle_digest": target_digest} if target_digest else {}
    gpus = {"summary": inventory.summary(), "source": inventory.source,
            "driver_version": inventory.driver_version,
            "gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid, "arch": g.arch,
                      "memory_total_bytes": g.memory_total_bytes} for g in inventory.gpus]}
    try:
        candidates = read_engines_dir(profiles) if isinstance(profiles, Path) else profiles
        selection = select_profile(candidates, inventory, pinned, supported_trtllm)
    except ApplianceError as exc:
        with app.transaction():
            app.trail.append(Event(
                action="hardware.fit", actor=actor, target_type="engines", target_id=target,
                target_digest=target_digest, outcome="failure", reason=exc.message,
                details={**named, "inventory": gpus, "pinned": pinned,
                         "refused": exc.message},
                terminal=session.terminal))
        raise
    with app.transaction():
        app.trail.append(Event(
            action="hardware.fit", actor=actor, target_type="engines", target_id=target,
            target_digest=target_digest, outcome="success" if selection.ok else "failure",
            reason=None if selection.ok else selection.note,
            details={**named, "inventory": gpus,
                     "supported_trtllm": sorted(supported_trtllm) if supported_trtllm else None,
                     **selection.to_dict()},
            terminal=session.terminal))
    return selection
