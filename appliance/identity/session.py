"""An authenticated session: who is acting, in which roles, from which terminal.

Mutable on purpose: the service layer stamps activity (for idle expiry) and counts
signatures (the first in a session needs username and password, 11.200(a)(1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from appliance.audit.events import Actor


@dataclass
class Session:
    username: str
    full_name: str
    roles: tuple[str, ...]
    terminal: str
    started_at: datetime
    last_activity: datetime
    signatures: int = 0
    must_change_password: bool = False
    password_expired: bool = False
    id: str = field(default="")
    ended: bool = False
    epoch: int = 0  # the account's session_epoch at login (see access.refresh_roles)

    def actor(self, role: str) -> Actor:
        return Actor(self.username, self.full_name, role)
