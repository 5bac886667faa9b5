"""Reading electronic signatures: every view shows printed name, time and meaning (11.50)."""

from __future__ import annotations

from appliance.context import Appliance
from appliance.errors import IntegrityError, InvalidInput
from appliance.identity.session import Session
from appliance.identity.signatures import Signature, get_signature, trail_mismatch
from appliance.services.access import authorize


def list_signatures(app: Appliance, session: Session, record_type: str | None = None,
                    record_id: str | None = None, limit: int = 200) -> list[Signature]:
    authorize(app, session, "signatures.view", target_type="signature", target_id="*")
    sql, args = "SELECT id FROM signatures WHERE 1", []
    if record_type:
        sql += " AND record_type = ?"
        args.append(record_type)
    if record_id:
        sql += " AND record_id = ?"
        args.append(record_id)
    ids = [r[0] for r in app.conn.execute(sql + " ORDER BY ts DESC LIMIT ?", (*args, limit))]
    return [_as_carried(app, s) for s in (get_signature(app.conn, i) for i in ids)
            if s is not None]


def show_signature(app: Appliance, session: Session, sig_id: str) -> Signature:
    authorize(app, session, "signatures.view", target_type="signature", target_id=sig_id)
    sig = get_signature(app.conn, sig_id)
    if sig is None:
        raise InvalidInput(f"no signature {sig_id!r}", "see `appliance signatures list`")
    return _as_carried(app, sig)


def _as_carried(app: Appliance, sig: Signature) -> Signature:
    """Never show a row that differs from the manifestation its audit event carries
    (11.70: a signature moved to another record or signer by editing the database)."""
    why = trail_mismatch(app.conn, sig)
    if why is not None:
        raise IntegrityError(why, "run `appliance audit verify`; restore from a verified backup")
    return sig
