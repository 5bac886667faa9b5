"""Media actions: scan removable media for bundles, and import one.

Import verifies everything small first (TUF metadata against the trust store, each
component's signature file and model signature, the media's file list against the signed
manifests) and only then copies payload into the content store, hashing while copying.
Every import, successful or refused, is an audit event with a one-line reason; trusted
metadata and the bundle record change only in the transaction of a successful import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.audit import lookup
from appliance.audit.events import Event
from appliance.bundle import trust
from appliance.bundle.media import find_bundles, open_media
from appliance.bundle.model import (
    DESCRIPTION_TARGETS,
    MAX_DESCRIPTION,
    TARGETS_DIR,
    BundleDescription,
)
from appliance.bundle.store import ContentMismatch, ContentStore, ImportProgress
from appliance.bundle.verify import StaleMetadata, VerifiedBundle, verify_media
from appliance.context import Appliance
from appliance.errors import ApplianceError, BundleRefused, InvalidInput
from appliance.identity.session import Session
from appliance.services.access import authorize
from appliance.text import shown

NO_TRUST_HINT = "a security officer runs `appliance trust init --root FILE` first"


@dataclass(frozen=True)
class ScanEntry:
    path: str
    status: str                 # new | update | older | imported | refused
    name: str = ""
    version: int = 0
    publisher: str = ""
    size: int = 0
    components: list[dict[str, Any]] = field(default_factory=list)
    installed_version: int | None = None
    reason: str = ""
    digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportResult:
    bundle_id: int
    name: str
    version: int
    publisher: str
    digest: str
    state: str
    already_imported: bool
    copied_bytes: int
    skipped_bytes: int
    files_copied: int
    files_skipped: int
    seconds: float  # the whole import: verification, copy, record
    copy_seconds: float
    trust_added: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _installed_version(app: Appliance, name: str) -> int | None:
    row = app.conn.execute("SELECT MAX(version) FROM bundles WHERE name = ? AND state != "
                           "'REJECTED'", (name,)).fetchone()
    return row[0] if row else None


def _installed_base(app: Appliance, digest: str) -> bool:
    return app.conn.execute(
        "SELECT 1 FROM bundle_components c JOIN bundles b ON b.id = c.bundle_id "
        "WHERE c.kind = 'base_model' AND c.digest = ? AND b.state != 'REJECTED' LIMIT 1",
        (digest,)).fetchone() is not None


def check_clock(app: Appliance) -> None:
    """Expiry is judged by the appliance clock, so a clock set back (to revive expired
    metadata) must be caught: it may not be earlier than the newest audit event."""
    # MAX(ts), not the head: once the clock is set back, the newest events carry the
    # rolled-back time too.
    newest = lookup.newest_ts(app.conn)
    now = app.clock.iso()
    if newest is not None and now < newest:
        raise BundleRefused(f"clock rollback: the clock ({now}) is earlier than the newest "
                            f"audit event ({newest})",
                            "set the system clock correctly; nothing was imported")


def _verify(app: Appliance, path: Path) -> tuple[Any, VerifiedBundle, trust.TrustState]:
    """The media opened and verified, and the trusted metadata it was verified against."""
    check_clock(app)
    state = trust.current(app.conn)
    if state is None:
        raise BundleRefused("the trust store is empty", NO_TRUST_HINT)
    media = open_media(Path(path))
    bundle = verify_media(state, media, app.clock.now(), lambda d: _installed_base(app, d),
                          scratch=app.layout.root)
    clash = trust.conflict(app.conn, list(bundle.trust_updates))
    if clash is not None:
        raise BundleRefused(f"{clash} is already trusted with other content",
                            "the publisher must raise the version")
    return media, bundle, state


def _status(app: Appliance, bundle: VerifiedBundle) -> tuple[str, int | None]:
    if app.conn.execute("SELECT 1 FROM bundles WHERE digest = ?",
                        (bundle.digest,)).fetchone():
        return "imported", _installed_version(app, bundle.description.name)
    installed = _installed_version(app, bundle.description.name)
    if installed is None:
        return "new", None
    return ("update" if bundle.description.version > installed else "older"), installed


def _components(bundle: VerifiedBundle) -> list[dict[str, Any]]:
    return [{"name": c.info.name, "kind": c.info.kind, "size": c.info.size,
             "files": c.info.files, "tags": list(c.info.tags), "role": c.role}
            for c in bundle.components]


def scan(app: Appliance, session: Session, paths: list[Path] | None = None,
         search_removable: bool = True) -> list[ScanEntry]:
    """List bundles on removable media (and at or under `paths`; only there without
    `search_removable`) with what importing each would mean. Reads only metadata and
    signatures; copies nothing."""
    authorize(app, session, "media.scan", target_type="media", target_id="scan")
    for path in paths or []:
        try:
            path.lstat()
        except (OSError, ValueError) as exc:  # missing, a name too long, a NUL byte
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(f"cannot read {shown(str(path))}: {why}",
                               "check the path; is the media mounted?") from exc
    if search_removable:
        candidates = find_bundles(paths)
    else:
        from appliance.bundle.removable import search
        candidates = search(list(paths or []))
    entries = []
    for path in candidates:
        try:
            _, bundle, _ = _verify(app, path)
        except BundleRefused as exc:
            if isinstance(exc, StaleMetadata):
                entries.append(_older_entry(app, path, exc.message))
            else:
                entries.append(ScanEntry(str(path), "refused", reason=exc.message))
            continue
        status, installed = _status(app, bundle)
        d = bundle.description
        entries.append(ScanEntry(str(path), status, d.name, d.version, d.publisher,
                                 bundle.size, _components(bundle), installed,
                                 digest=bundle.digest))
    with app.transaction():
        app.trail.append(Event(action="media.scan", actor=session.actor(
            ",".join(session.roles)), target_type="media", target_id="scan",
            details={"paths": [str(p) for p in paths or []],
                     "found": [{"path": e.path, "status": e.status, "name": e.name,
                                "version": e.version} for e in entries]},
            terminal=session.terminal))
    return entries


def _older_entry(app: Appliance, path: Path, reason: str) -> ScanEntry:
    """Media older than the trusted metadata cannot be verified any more; its description
    is read (size-limited, never trusted) only to tell the user which release it is: the
    name (a plain identifier) and version, never free text such as the publisher."""
    name, version = "", 0
    try:
        media = open_media(Path(path))
        for rel in DESCRIPTION_TARGETS:
            if any(f.relpath == f"{TARGETS_DIR}/{rel}" for f in media.list_files()):
                d = BundleDescription.from_dict(json.loads(media.read_bytes(
                    f"{TARGETS_DIR}/{rel}", MAX_DESCRIPTION)))
                name, version = d.name, d.version
                break
    except (BundleRefused, ValueError):
        pass
    installed = _installed_version(app, name) if name else None
    return ScanEntry(str(path), "older", name, version, installed_version=installed,
                     reason=f"{reason} (not verifiable: older than the trusted metadata; "
                            "name and version as the unverified description says)")


def import_bundle(app: Appliance, session: Session, path: Path,
                  progress: Callable[[ImportProgress], None] | None = None) -> ImportResult:
    """Verify the bundle at `path` completely, copy its payload into the content store, and
    record it as IMPORTED together with the newly trusted metadata and the audit event.
    The store stays locked from the copy until the record commits, so a reclaim never
    takes objects that are about to be referenced."""
    started = time.monotonic()
    actor = authorize(app, session, "media.import", target_type="media", target_id=str(path))
    bundle: VerifiedBundle | None = None
    with ExitStack() as stack:
        try:
            media, bundle, verified_against = _verify(app, path)
            status, installed = _status(app, bundle)
            d = bundle.description
            if status == "older":
                raise BundleRefused(f"bundle {d.name} version {d.version} is not newer than "
                                    f"the installed version {installed}")
            clash = app.conn.execute("SELECT digest FROM bundles WHERE name = ? AND "
                                     "version = ?", (d.name, d.version)).fetchone()
            if clash and clash[0] != bundle.digest:
                raise BundleRefused(f"another bundle {d.name} version {d.version} is already "
                                    "imported")
            store = ContentStore(app.layout.store)
            held = stack.enter_context(store.lock())
            # Imports change trust only under this lock, so what is trusted now stays so
            # until this one commits. If another import committed while this one verified
            # (release 3 while this is release 2), the verdict is stale: recording it would
            # take the appliance back to older metadata.
            if trust.current(app.conn) != verified_against:
                raise BundleRefused("the trusted metadata changed while this import was "
                                    "verifying (another import finished first)",
                                    "import again; it is verified against the new trust")
            fresh = [w.sha256 for w in bundle.wanted() if not store.has(w.sha256)]
            try:
                ingest = store.ingest(media, bundle.wanted(), progress, held)
            except ContentMismatch:
                # A bad bundle leaves nothing behind; an interrupted one (Ctrl-C, a pulled
                # stick, a full disk) keeps its verified objects so the next run resumes.
                store.discard([d for d in fresh if not _referenced(app, d)], held)
                raise
        except (ApplianceError, KeyboardInterrupt) as exc:
            reason = exc.message if isinstance(exc, ApplianceError) else "interrupted (Ctrl-C)"
            _record_failure(app, session, actor, path, reason, bundle)
            raise
        with app.transaction() as conn:
            added = trust.store(conn, list(bundle.trust_updates), app.clock.iso())
            row = conn.execute("SELECT id, state FROM bundles WHERE digest = ?",
                               (bundle.digest,)).fetchone()
            already = row is not None
            if row is None:
                bundle_id = _insert(app, session, bundle, str(path))
                state = "IMPORTED"
            else:
                bundle_id, state = row
            app.trail.append(Event(
                action="media.import", actor=actor, target_type="bundle",
                target_id=f"{d.name}@{d.version}", target_digest=bundle.digest,
                new={"state": state, "bundle_id": bundle_id} if not already else None,
                details={"source": str(path), "publisher": d.publisher,
                         "already_imported": already, "components": _components(bundle),
                         "copied_bytes": ingest.copied_bytes,
                         "skipped_bytes": ingest.skipped_bytes, "trust_added": added,
                         "metadata_version": bundle.metadata_version},
                terminal=session.terminal))
    return ImportResult(bundle_id, d.name, d.version, d.publisher, bundle.digest, state,
                        already, ingest.copied_bytes, ingest.skipped_bytes,
                        ingest.files_copied, ingest.files_skipped,
                        time.monotonic() - started, ingest.seconds, added)


def skipped_note(result: ImportResult) -> str:
    """Said of the files the store already held, on the line that reports an import: they
    were not read from the media (the store's copies were verified when first copied), so
    a re-import vouches for the appliance's copy, not the media's."""
    return ", not read from the media" if result.files_skipped else ""


def _referenced(app: Appliance, digest: str) -> bool:
    return app.conn.execute(
        "SELECT 1 FROM bundle_components, json_each(bundle_components.files) "
        "WHERE json_extract(json_each.value, '$[1]') = ? LIMIT 1", (digest,)).fetchone() is not None


def _insert(app: Appliance, session: Session, bundle: VerifiedBundle, source: str) -> int:
    d = bundle.description
    cur = app.conn.execute(
        "INSERT INTO bundles (digest, name, version, publisher, state, description, "
        "metadata_version, size_bytes, source, imported_at, imported_by) "
        "VALUES (?, ?, ?, ?, 'IMPORTED', ?, ?, ?, ?, ?, ?)",
        (bundle.digest, d.name, d.version, d.publisher, bundle.description_bytes.decode(),
         bundle.metadata_version, bundle.size, source, app.clock.iso(), session.username))
    bundle_id = cur.lastrowid
    for c in bundle.components:
        prefix = f"{TARGETS_DIR}/{c.info.payload}/"
        files = [[w.relpath[len(prefix):], w.sha256, w.size] for w in c.files]
        app.conn.execute(
            "INSERT INTO bundle_components (bundle_id, name, kind, role, digest, info, files) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (bundle_id, c.info.name, c.info.kind, c.role, c.info.digest,
             json.dumps(c.info.to_custom(), sort_keys=True), json.dumps(files)))
    return bundle_id


def _record_failure(app: Appliance, session: Session, actor: Any, path: Path, reason: str,
                    bundle: VerifiedBundle | None) -> None:
    target = f"{bundle.description.name}@{bundle.description.version}" if bundle else str(path)
    with app.transaction():
        app.trail.append(Event(
            action="media.import", actor=actor, target_type="bundle" if bundle else "media",
            target_id=target, target_digest=bundle.digest if bundle else None,
            outcome="failure", reason=reason, details={"source": str(path)},
            terminal=session.terminal))


def bundles(app: Appliance, session: Session) -> list[dict[str, Any]]:
    """Imported bundles, newest first (for the console and `appliance media list`)."""
    authorize(app, session, "update.view", target_type="bundle", target_id="*")
    rows = app.conn.execute(
        "SELECT id, name, version, publisher, state, digest, size_bytes, imported_at, "
        "imported_by FROM bundles ORDER BY id DESC").fetchall()
    keys = ("id", "name", "version", "publisher", "state", "digest", "size_bytes",
            "imported_at", "imported_by")
    return [dict(zip(keys, r, strict=True)) for r in rows]
