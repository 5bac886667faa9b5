"""The tamper-evident Part 11 audit trail: hash chain, signed checkpoints, verification, export."""

from appliance.audit.events import SYSTEM_ACTOR, Actor, Event, StoredEvent

__all__ = ["SYSTEM_ACTOR", "Actor", "Event", "StoredEvent"]
