"""What the console dashboard shows, readable headless too: who still holds conflicting roles."""

from __future__ import annotations

from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.identity.users import list_users
from appliance.services.access import authorize

# Whoever manages accounts must not also approve content (FDA data-integrity guidance).
CONFLICTING_ROLES = frozenset({"admin", "security"})


def role_conflicts(app: Appliance, session: Session) -> list[str]:
    """Active accounts that hold both admin and security (the first account does at set-up)."""
    authorize(app, session, "status.view")
    return [u.username for u in list_users(app.conn)
            if u.active and CONFLICTING_ROLES <= set(u.roles)]
