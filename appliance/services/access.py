"""Permission checks in the service layer; every denial is itself an audit event."""

from __future__ import annotations

from appliance.audit.events import Actor, Event
from appliance.context import Appliance
from appliance.errors import PermissionDenied
from appliance.identity.roles import granting_role, roles_for
from appliance.identity.session import Session


def authorize(app: Appliance, session: Session, permission: str, *, target_type: str = "",
              target_id: str = "") -> Actor:
    """Return the actor (with the granting role) or record the denial and raise."""
    role = granting_role(session.roles, permission)
    if role is not None:
        return session.actor(role)
    needed = ", ".join(sorted(roles_for(permission)))
    with app.transaction():
        app.trail.append(Event(
            action="access.denied", actor=session.actor(",".join(session.roles) or "none"),
            target_type=target_type, target_id=target_id, outcome="denied",
            details={"permission": permission, "required_roles": sorted(roles_for(permission))},
            terminal=session.terminal,
        ))
    raise PermissionDenied(f"{session.username} may not {permission} (needs role: {needed})")
