"""A small, varied trail for export tests: signed events, awkward text, old/new values."""

from __future__ import annotations

import re
import zlib

from appliance.audit.events import Actor, Event
from appliance.context import Appliance

BOB = Actor("bob", "Bob Approver", "admin")
IRA = Actor("ira", "Ira Tech, Jr. \"IT\"", "it")
ZOE = Actor("zoe", "Zoë Ærø 李", "ml")

SIGNATURE = {"username": "bob", "name": "Bob Approver", "meaning": "approved",
             "ts": "2026-01-15T10:00:00.000Z", "record_digest": "ab" * 32}


def populate(app: Appliance, clock, n: int = 12) -> None:
    """`n` ordinary events plus one signed approval and one recorded with a clock warning."""
    with app.transaction():
        for i in range(n):
            actor = (IRA, ZOE)[i % 2]
            app.trail.append(Event(
                action=("media.import", "dataset.register")[i % 2], actor=actor,
                target_type=("bundle", "dataset")[i % 2], target_id=f"item-{i}",
                target_digest="cd" * 32 if i % 3 == 0 else None,
                outcome=("success", "failure")[i % 5 == 4],
                reason=(f"reason {i}, with \"quotes\"\nand a second line; é 李"
                        if i % 2 or i % 4 == 0 else None),  # a change always has one
                old={"state": "IMPORTED", "n": i} if i % 4 == 0 else None,
                new={"state": "VERIFIED", "tags": ["a", "b"], "note": "x" * (i * 40)},
                details={"size": i * 1000, "nested": {"z": 1, "a": [True, None]}},
                terminal="tty7"))
        app.trail.append(Event(
            action="update.approve", actor=BOB, target_type="release", target_id="r-42",
            target_digest="ef" * 32, reason="evaluation passed; approved for use",
            old={"state": "PENDING_APPROVAL"}, new={"state": "APPROVED"},
            signature=SIGNATURE, terminal="tty1"))
    clock.advance(seconds=-5)  # the clock steps back: the next event carries a warning
    with app.transaction():
        app.trail.append(Event(action="media.scan", actor=IRA, target_type="media",
                               target_id="usb0"))
    clock.advance(seconds=10)


def pdf_text(data: bytes) -> str:
    """The text operators of every compressed content stream (fpdf2 writes Flate streams)."""
    out = []
    # Not `\r?\nendstream`: compressed bytes may end in \r, which that would swallow.
    for m in re.finditer(rb"stream\r?\n(.*?)\nendstream", data, re.S):
        try:
            out.append(zlib.decompressobj().decompress(m[1]).decode("latin-1"))
        except zlib.error:
            continue
    return "\n".join(out)


def pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", data))


JSONL_RE = re.compile(
    rb'\{"seq":(\d+),"prev_hash":"([0-9a-f]{64})","hash":"([0-9a-f]{64})","event":(\{.*\})\}')
