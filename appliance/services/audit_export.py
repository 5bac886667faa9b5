"""Exporting the audit trail for auditors: CSV, JSON Lines or PDF, each with a signed manifest.

The export signs a fresh checkpoint first and covers exactly the trail up to it, so the
manifest's head hash, the checkpoint and the file agree even while others keep appending.
The files appear under their final names only once the export's own audit event has
committed: if the trail cannot record it, no export exists (fail closed). A crash between
the two leaves the event and the staged files, never an export without its event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance import db
from appliance.audit import export
from appliance.audit.checkpoint import latest
from appliance.audit.events import Event
from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.durable import StagedFile
from appliance.errors import ApplianceError, InvalidInput
from appliance.identity.session import Session
from appliance.services.access import authorize
from appliance.services.audit import record_write_failure

_EXT = {"csv": "csv", "jsonl": "jsonl", "pdf": "pdf"}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_path: Path
    count: int
    sha256: str
    head_hash: str


def export_trail(app: Appliance, session: Session, fmt: str, out: Path,
                 flt: EventFilter = EventFilter(),
                 progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Export the events `flt` matches to `out` (a file, or a directory to name one in).

    `progress(done, total)` is called after every batch of at most 5,000 events.
    """
    actor = authorize(app, session, "audit.export", target_type="audit", target_id="trail")
    fmt = (fmt or "").lower()
    if fmt not in export.FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}", "use csv, jsonl or pdf")
    exported_at = app.clock.iso()
    path = _resolve_out(Path(out), fmt, app.appliance_id, exported_at)
    manifest_path = export.manifest_path_for(path)
    if manifest_path.exists():
        raise InvalidInput(f"{manifest_path} already exists", "choose another --out")

    with app.transaction() as conn:
        app.trail.checkpoint("export")
        cp = latest(conn)
    assert cp is not None  # just written
    hdr = export.ExportHeader(app.appliance_id, fmt, flt, cp, actor, exported_at,
                              app.key.key_id)
    # Never over a file that took the name while this export was written.
    data = StagedFile(path, overwrite=False)
    manifest = StagedFile(manifest_path, overwrite=False)
    details = {"format": fmt, "filter": asdict(flt), "path": str(path)}
    # A separate connection: the console may use app.conn from another thread meanwhile.
    reader = db.connect(app.layout.db)
    try:
        written = export.write_export(reader, hdr, data, progress)
        export.write_json(manifest, export.sign_manifest(
            export.build_manifest(hdr, path.name, written, app.key), app.key))
    except OSError as exc:
        data.discard()
        manifest.discard()
        record_write_failure(app, session, actor, "audit.export", details, exc)
        raise ApplianceError(f"could not write the export to {path}: {exc.strerror or exc}",
                             "check the destination's free space and permissions") from exc
    except BaseException:
        data.discard()
        manifest.discard()
        raise
    finally:
        reader.close()

    details.update(count=written.count, sha256=written.sha256, first_seq=written.first_seq,
                   last_seq=written.last_seq, head_seq=cp.tree_size, head_hash=cp.head_hash,
                   manifest=str(manifest_path))
    try:
        with app.transaction():
            app.trail.append(Event(
                action="audit.export", actor=actor, target_type="audit", target_id="trail",
                target_digest=written.sha256, details=details, terminal=session.terminal))
    except BaseException:
        data.discard()
        manifest.discard()
        raise
    try:
        data.commit()
        manifest.commit()
    except OSError as exc:
        data.discard()
        manifest.discard()
        record_write_failure(app, session, actor, "audit.export", details, exc)
        raise ApplianceError(f"could not put the export in place at {path}: "
                             f"{exc.strerror or exc}",
                             "check the destination, then export again") from exc
    return ExportResult(path, manifest_path, written.count, written.sha256, cp.head_hash)


def _resolve_out(out: Path, fmt: str, appliance_id: str, exported_at: str) -> Path:
    try:
        path = _free_name(out, fmt, appliance_id, exported_at)
        try:
            path.lstat()  # a name the OS refuses says so here, not half-way through writing
        except FileNotFoundError:
            pass
        return path
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot export to {out}: {why}", "choose another destination"
                           ) from exc


def _free_name(out: Path, fmt: str, appliance_id: str, exported_at: str) -> Path:
    """`out` itself (which must not exist), or a new name in the directory `out`."""
    if out.is_symlink():  # media's own link would take the export off the media
        raise InvalidInput(f"{out} is a symbolic link",
                           "exports never follow links; choose a real directory or a new file")
    if out.is_dir():
        stamp = exported_at.replace("-", "").replace(":", "").replace(".", "")
        base = f"audit-{appliance_id[:8]}-{stamp}"
        path, n = out / f"{base}.{_EXT[fmt]}", 1
        while path.exists() or export.manifest_path_for(path).exists():
            n += 1
            path = out / f"{base}-{n}.{_EXT[fmt]}"
        return path
    if out.exists():
        raise InvalidInput(f"{out} already exists", "exports never overwrite; choose another --out")
    if not out.parent.is_dir():
        raise InvalidInput(f"directory {out.parent} does not exist",
                           "create it or choose another --out")
    return out
