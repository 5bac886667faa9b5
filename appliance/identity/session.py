"""An authenticated session: who is acting, in which roles, from which terminal."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from appliance.audit.events import Actor


@dataclass(frozen=True)
class Session:
    username: str
    full_name: str
    roles: tuple[str, ...]
    terminal: str
    started_at: datetime
    last_activity: datetime
    signatures: int = 0
    must_change_password: bool = False
    id: str = field(default="")

    def actor(self, role: str) -> Actor:
        return Actor(self.username, self.full_name, role)

    def touched(self, now: datetime) -> Session:
        return replace(self, last_activity=now)
