"""What an audit event holds, and its canonical stored form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

from appliance.canonical import canonical_bytes, encode_plain

# The value types of a flat free-form dict, the common case `Event.canonical` checks in C.
_FLAT = frozenset({str, int, bool, type(None)})

OUTCOMES = ("success", "failure", "denied")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: username, printed name (11.50) and the role the action was taken in."""

    username: str
    name: str
    role: str


SYSTEM_ACTOR = Actor("system", "Appliance (automatic)", "system")


@dataclass(frozen=True, slots=True)
class Event:
    """An action to record. Time and sequence are assigned by the trail, never by callers."""

    action: str
    actor: Actor
    target_type: str = ""
    target_id: str = ""
    target_digest: str | None = None
    outcome: str = "success"
    reason: str | None = None
    old: Any = None
    new: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    terminal: str = ""
    signature: dict[str, Any] | None = None

    def body(self, seq: int, ts: str, clock_warning: str | None) -> dict[str, Any]:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        body: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "actor": {"username": self.actor.username, "name": self.actor.name,
                      "role": self.actor.role},
            "terminal": self.terminal,
            "action": self.action,
            "target": {"type": self.target_type, "id": self.target_id,
                       "digest": self.target_digest},
            "outcome": self.outcome,
            "reason": self.reason,
            "old": self.old,
            "new": self.new,
            "details": self.details,
        }
        if self.signature is not None:
            body["signature"] = self.signature
        if clock_warning is not None:
            body["clock_warning"] = clock_warning
        return body

    def canonical(self, seq: int, ts: str, clock_warning: str | None) -> bytes:
        """The RFC 8785 bytes of `body`, the form that is stored and hashed. Every append
        encodes one, right after the previous append's fsync, when every line runs cold, so
        the common case is checked with a few C-level calls: the fixed fields must be strings
        (str.join checks that) or None where optional; each free-form value None or a flat
        dict (string, integer, boolean or null values; orjson refuses integers beyond 2^53
        and keys that are not strings); and the keys ASCII, whose code-point order is RFC
        8785's UTF-16 order (an all-ASCII encoding says so in one call). Anything else goes
        through `_checked`, as does a change (old values) whose reason must be checked."""
        a, d, o, n, s = self.actor, self.details, self.old, self.new, self.signature
        body = self.body(seq, ts, clock_warning)
        try:
            "".join((self.action, a.username, a.name, a.role, self.terminal, self.target_type,
                     self.target_id, self.outcome, ts,
                     "" if self.target_digest is None else self.target_digest,
                     "" if self.reason is None else self.reason,
                     "" if clock_warning is None else clock_warning))
        except TypeError:  # a fixed field that is not a string
            return self._checked(body)
        # One test per value, unrolled: a loop over the four costs a microsecond, cold.
        if (type(d) is not dict or not _FLAT.issuperset(map(type, d.values()))
                or o is not None and (not self.reason or self.reason.isspace()
                                      or type(o) is not dict
                                      or not _FLAT.issuperset(map(type, o.values())))
                or n is not None and (type(n) is not dict
                                      or not _FLAT.issuperset(map(type, n.values())))
                or s is not None and (type(s) is not dict
                                      or not _FLAT.issuperset(map(type, s.values())))):
            return self._checked(body)
        data = encode_plain(body)
        if data.isascii() or "".join(chain(d, o or (), n or (), s or ())).isascii():
            return data
        return canonical_bytes(body)

    def _checked(self, body: dict[str, Any]) -> bytes:
        """What the fast path leaves: a change to a record (old values) must say why, and
        the body goes through the reference encoder."""
        if self.old is not None and not (type(self.reason) is str and self.reason.strip()):
            raise ValueError(f"{self.action}: a change to a record needs its reason")
        return canonical_bytes(body)


class StoredEvent(NamedTuple):
    """An event as read back from the trail, with the stored canonical text it was hashed
    from. A named tuple: one is made per append and per row read."""

    seq: int
    prev_hash: bytes
    hash: bytes
    text: str

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.text)

    def flat(self) -> dict[str, Any]:
        """One row for tables and CSV: every field, nothing obscured, nested values as their
        stored canonical JSON (the same text as the CSV export's SQL)."""
        d = self.data
        raw = member_texts(self.text)
        sig = d.get("signature") or {}
        return {
            "seq": d["seq"],
            "ts": d["ts"],
            "actor": d["actor"]["username"],
            "actor_name": d["actor"]["name"],
            "actor_role": d["actor"]["role"],
            "terminal": d.get("terminal", ""),
            "action": d["action"],
            "target_type": d["target"]["type"],
            "target_id": d["target"]["id"],
            "target_digest": d["target"].get("digest") or "",
            "outcome": d["outcome"],
            "reason": d.get("reason") or "",
            "old": _json_or_empty(d, raw, "old"),
            "new": _json_or_empty(d, raw, "new"),
            "details": _json_or_empty(d, raw, "details", "{}"),
            "signature": _manifestation(sig),
            "clock_warning": d.get("clock_warning") or "",
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


class Appended(NamedTuple):
    """What an append stored: its place in the chain and the canonical bytes it hashed
    (the stored body is their text; `stored` gives the event as a read would)."""

    seq: int
    prev_hash: bytes
    hash: bytes
    body: bytes

    def stored(self) -> StoredEvent:
        return StoredEvent(self.seq, self.prev_hash, self.hash, self.body.decode("utf-8"))


_DECODER = json.JSONDecoder()


def member_texts(text: str) -> dict[str, str]:
    """The stored text of each top-level member of a compact JSON object, as it stands in
    the body (the text SQLite's `->` copies out of it); {} when the text is not laid out
    so (a body no append wrote)."""
    members: dict[str, str] = {}
    try:
        i = 1 if text[:1] == "{" else len(text) + 1
        while i < len(text) and text[i] != "}":
            key, colon = _DECODER.raw_decode(text, i)
            _, end = _DECODER.raw_decode(text, colon + 1)
            if not isinstance(key, str) or text[colon] != ":":
                return {}
            members[key] = text[colon + 1:end]
            i = end + (text[end:end + 1] == ",")
    except (ValueError, IndexError):
        return {}
    return members


def _json_or_empty(data: dict[str, Any], raw: dict[str, str], name: str, *empty: str) -> str:
    """A nested member as the stored canonical text, exactly as the CSV export's SQL gives
    it ('' when absent, null or one of `empty`): re-encoding could differ (a float's form,
    key order, integers beyond 2^53 that RFC 8785 refuses to encode)."""
    text = raw.get(name)
    if text is None:  # not laid out as stored: encode the parsed value
        value = data.get(name)
        if value is None:
            return ""
        try:
            text = canonical_bytes(value).decode("utf-8")
        except ValueError:
            text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "" if text in ("null", *empty) else text


def _manifestation(sig: dict[str, Any]) -> str:
    """11.50: printed name, date and time, and meaning, in one readable string."""
    if not sig:
        return ""
    return f"{sig.get('name', '')} ({sig.get('username', '')}), {sig.get('meaning', '')}, " \
           f"{sig.get('ts', '')}"


FLAT_COLUMNS = (
    "seq", "ts", "actor", "actor_name", "actor_role", "terminal", "action", "target_type",
    "target_id", "target_digest", "outcome", "reason", "old", "new", "details", "signature",
    "clock_warning", "prev_hash", "hash",
)
