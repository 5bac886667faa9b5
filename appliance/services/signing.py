"""Applying an electronic signature as part of an action (11.200(a), 11.50, 11.70, 11.10(j)).

Services that sign (approve, reject, review, roll back...) do their state change inside
`with signing(app, session, request, meaning=..., permission=...) as signer:` and call
`signer.apply(...)`, so the state change, the signature row and the audit event carrying
the manifestation commit together (the trail then writes a signed checkpoint). The service
names the meaning of its step, and a request with another is refused before any password
is checked; and the permission it authorized, which the signing transaction checks again.

    with signing(app, session, req, meaning="approved", permission="update.approve",
                 target=("bundle", ref)) as signer:
        ...state change on app.conn...
        signer.apply(record_type="bundle", record_id=..., content=record, event=Event(...))
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from appliance.audit.events import Event
from appliance.canonical import digest_of
from appliance.context import Appliance
from appliance.errors import AuthenticationFailed, SignatureRefused
from appliance.identity.session import Session
from appliance.identity.signatures import MEANINGS, STATEMENT, Signature, insert_signature
from appliance.identity.users import get_user, update_user
from appliance.services import auth
from appliance.services.access import authorize, record_denial, still_permitted
from appliance.text import one_line


@dataclass(frozen=True)
class SignatureRequest:
    """What the signer typed in the signature dialog or on the command line."""

    meaning: str
    reason: str
    password: str
    username: str | None = None
    acknowledge_statement: bool = False


@dataclass(frozen=True)
class SignaturePrompt:
    """What a signature dialog must ask this signer, decided here so every screen asks alike."""

    username: bool      # first signature of the session: ID and password (11.200(a)(1))
    statement: bool     # never signed: the statement must be acknowledged first (11.10(j))
    full_name: str
    statement_text: str = STATEMENT


def prompt(app: Appliance, session: Session, permission: str, *, target_type: str,
           target_id: str) -> SignaturePrompt:
    """Before anyone types a password: may this session take the signed action at all (a
    refusal is recorded like any other), and what must the dialog ask."""
    authorize(app, session, permission, target_type=target_type, target_id=target_id)
    user = get_user(app.conn, session.username)
    assert user is not None
    return SignaturePrompt(session.signatures == 0, user.signature_ack_at is None,
                           user.full_name)


def reauthenticate(app: Appliance, session: Session, req: SignatureRequest) -> None:
    """Username and password for the first signature of a session, then the password."""
    if req.meaning not in MEANINGS:
        raise SignatureRefused(f"unknown signature meaning {req.meaning!r}",
                               f"use one of: {', '.join(MEANINGS)}")
    if not req.reason.strip():
        raise SignatureRefused("a signature needs a reason", "type why you sign")
    one_line(req.reason, "the reason")
    if session.must_change_password:
        raise SignatureRefused("a temporary or expired password cannot sign",
                               "change your password first")
    if session.signatures == 0 and not req.username:
        raise SignatureRefused("the first signature of a session needs your username too",
                               "enter username and password")
    now = app.clock.now()
    user = get_user(app.conn, session.username)
    assert user is not None
    if auth.password_expired(app, user, now):
        # Expired since login: the session goes on, but signs nothing with it (11.300(b)).
        raise SignatureRefused("your password has expired and cannot sign",
                               "change your password first")
    if req.username and req.username.strip().lower() != session.username:
        auth.record_failure(app, session.username, "signature.reauth",
                            "username differs from the logged-in user", now)
        raise SignatureRefused("you can only sign as yourself",
                               "enter your own username and password")
    # Claimed under the write lock: simultaneous signatures try no more passwords than the
    # lockout allows. A locked account checks none and counts one more failure.
    attempt, _ = auth.claim_attempt(app, session.username, now)
    if attempt is None or auth.check_credentials(app, session.username, req.password) is None:
        auth.record_failure(app, session.username, "signature.reauth", "wrong password", now,
                            attempt)
        raise AuthenticationFailed("signature not applied: wrong password")
    auth.release_attempt(app, attempt)
    if user.signature_ack_at is None and not req.acknowledge_statement:
        raise SignatureRefused("your first signature needs the signature statement acknowledged",
                               f"read and accept: {STATEMENT}")


@dataclass
class Signer:
    app: Appliance
    session: Session
    req: SignatureRequest
    applied: int = 0

    def apply(self, *, record_type: str, record_id: str, content: Any,
              event: Event) -> Signature:
        """Append `event` carrying the signature manifestation and store the signature
        bound to the digest of `content` (11.70)."""
        app, session, req = self.app, self.session, self.req
        user = get_user(app.conn, session.username)
        assert user is not None
        ts = app.clock.iso()
        if user.signature_ack_at is None:
            update_user(app.conn, user.username, signature_ack_at=ts)
            app.trail.append(Event(
                action="signature.statement_acknowledged", actor=event.actor,
                target_type="user", target_id=user.username,
                reason="first electronic signature", details={"statement": STATEMENT},
                terminal=session.terminal))
        sig = Signature(str(uuid.uuid4()), user.username, user.full_name, ts, req.meaning,
                        req.reason.strip(), record_type, record_id, digest_of(content))
        stored = app.trail.append(Event(
            action=event.action, actor=event.actor, target_type=record_type,
            target_id=record_id, target_digest=sig.record_digest, outcome=event.outcome,
            reason=req.reason.strip(), old=event.old, new=event.new, details=event.details,
            terminal=session.terminal, signature=sig.manifestation()))
        sig = Signature(**{**sig.to_dict(), "audit_seq": stored.seq})
        insert_signature(app.conn, sig)
        self.applied += 1
        return sig


def require_meaning(req: SignatureRequest, meaning: str) -> None:
    """Refuse a request whose meaning is not the step's, before any password is checked
    (services call it early too, before the work a signature would end)."""
    if req.meaning != meaning:
        raise SignatureRefused(f"this step is signed with the meaning {meaning!r}, "
                               f"not {req.meaning!r}", f"sign with meaning {meaning}")


class _AccountChanged(Exception):
    """Found in the signing transaction, which it rolls back; recorded after."""


@contextmanager
def signing(app: Appliance, session: Session, req: SignatureRequest, *, meaning: str,
            permission: str, target: tuple[str, str] = ("", "")) -> Iterator[Signer]:
    """Re-authenticate, then one transaction for the change and its signature(s).

    `meaning` is the one the signed step carries (11.50): the service says it, never the
    request, so an access review cannot be signed "approved" nor a trust root "rejected".
    `permission` is the one the service authorized for `target` (type, id). The account is
    read again under the write lock, first thing in the transaction: one disabled, reset or
    stripped of the role since `authorize` (the password check alone takes a while) signs
    nothing (11.10(d), (g)), and the refusal is recorded once the transaction has rolled
    back."""
    require_meaning(req, meaning)
    reauthenticate(app, session, req)
    signer = Signer(app, session, req)
    try:
        with app.transaction():
            if not still_permitted(app, session, permission):
                raise _AccountChanged
            yield signer
    except _AccountChanged:
        # Records the denial or the session's end, and raises.
        authorize(app, session, permission, target_type=target[0], target_id=target[1])
        # Changed back in the meantime: still refused, and recorded.
        record_denial(app, session, *target, {"permission": permission,
                                              "reason": "the account changed while signing"})
        raise SignatureRefused(f"{session.username}'s account changed while signing",
                               "sign again") from None
    session.signatures += signer.applied
