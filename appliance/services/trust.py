"""Trust store actions: take the first trusted root (signed by a security officer), show it.

After `init`, trust changes only through signed metadata on media (an import), never here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root

from appliance.audit.events import Event
from appliance.bundle import trust
from appliance.bundle.model import TOP_ROLES
from appliance.context import Appliance
from appliance.errors import BundleRefused, InvalidInput
from appliance.identity.session import Session
from appliance.services import signing
from appliance.services.access import authorize
from appliance.text import shown


def check_root(data: bytes, now: datetime) -> Metadata[Root]:
    """A root that can anchor trust: parses as root metadata, signed by a threshold of its
    own keys, in date, and naming every top-level role. Anything else is a BundleRefused,
    so `init_trust` records it."""
    hint = "pass the root.json from the installer media"
    try:
        md = Metadata.from_bytes(data)
    except (tuf_exc.RepositoryError, ValueError, TypeError, KeyError) as exc:
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise BundleRefused(f"not TUF root metadata: {shown(text)}", hint) from None
    if not isinstance(md.signed, Root):
        raise BundleRefused(f"not TUF root metadata: it is {md.signed.type} metadata", hint)
    root = md.signed
    missing = [r for r in TOP_ROLES if r not in root.roles]
    if missing:
        raise BundleRefused(f"root names no keys for role {missing[0]}")
    try:
        root.verify_delegate("root", md.signed_bytes, md.signatures)
    except tuf_exc.UnsignedMetadataError as exc:
        raise BundleRefused(f"root is not signed by its own threshold: {exc}") from None
    if root.is_expired(now):
        raise BundleRefused(f"root expired on {root.expires.isoformat()}",
                            "obtain a current root from the vendor")
    return md


def _plain(fp: str) -> str:
    return "".join(fp.split()).lower()


def init_trust(app: Appliance, session: Session, root_bytes: bytes,
               req: signing.SignatureRequest, source: str = "",
               expect_fingerprint: str | None = None) -> dict[str, Any]:
    """Install the first trusted root. The security officer signs the step after comparing
    the fingerprint with the one printed on paper; refused once trust exists."""
    actor = authorize(app, session, "trust.manage", target_type="trust", target_id="root")
    fingerprint = trust.fingerprint(root_bytes)
    try:
        if expect_fingerprint is not None and _plain(expect_fingerprint) != _plain(fingerprint):
            raise BundleRefused("root fingerprint differs from the one expected",
                                "do not trust this root; contact the vendor")
        if trust.is_initialised(app.conn):
            raise InvalidInput("the trust store is already initialised",
                               "roots rotate only through signed metadata on media")
        md = check_root(root_bytes, app.clock.now())
    except (BundleRefused, InvalidInput) as exc:
        with app.transaction():
            app.trail.append(Event(action="trust.init", actor=actor, target_type="trust",
                                   target_id="root", outcome="failure", reason=exc.message,
                                   details={"fingerprint": fingerprint, "source": source},
                                   terminal=session.terminal))
        raise
    record = {"root_version": md.signed.version, "fingerprint": fingerprint,
              "sha256": _plain(fingerprint), "source": source}
    with signing.signing(app, session, req, meaning="approved", permission="trust.manage",
                         target=("trust", "root")) as signer:
        trust.store(app.conn, [("root", root_bytes)], app.clock.iso())
        signer.apply(record_type="trust_root", record_id=f"root-v{md.signed.version}",
                     content=record, event=Event(
                         action="trust.init", actor=actor, new=record,
                         details={"keys": sorted(md.signed.keys),
                                  "thresholds": {r: md.signed.roles[r].threshold
                                                 for r in TOP_ROLES}}))
    return {**record, **trust.describe(trust.current(app.conn), app.clock.now())}


def show_trust(app: Appliance, session: Session) -> dict[str, Any]:
    authorize(app, session, "trust.view", target_type="trust", target_id="root")
    state = trust.current(app.conn)
    if state is None:
        raise InvalidInput("the trust store is empty",
                           "a security officer runs `appliance trust init --root FILE`")
    out = trust.describe(state, app.clock.now())
    out["root_history"] = [{"version": v, "fingerprint": trust.fingerprint(b)}
                           for v, b in trust.root_history(app.conn)]
    return out
