"""Which event sits at each row of the console's audit list, without loading the events.

Unfiltered, the trail is gapless, so row i is plain arithmetic on the head. Filtered, one
worker reads the matching sequence numbers (8 bytes each); either way a page of rows is
then one keyset query through the audit service, wherever the user jumps.
"""

from __future__ import annotations

import bisect
import json
from array import array
from dataclasses import dataclass
from typing import Any

from appliance.audit.events import StoredEvent
from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.services import audit

PAGE_SIZE = 100


@dataclass(frozen=True)
class HeadRows:
    """All events 1..head; newest first when descending."""

    head: int
    descending: bool

    def __len__(self) -> int:
        return self.head

    def seq_at(self, index: int) -> int:
        return self.head - index if self.descending else index + 1

    def index_of(self, seq: int) -> int | None:
        if not 1 <= seq <= self.head:
            return None
        return self.head - seq if self.descending else seq - 1


@dataclass(frozen=True)
class SeqRows:
    """The events a filter matched, by their ascending sequence numbers."""

    seqs: array
    descending: bool

    def __len__(self) -> int:
        return len(self.seqs)

    def seq_at(self, index: int) -> int:
        return self.seqs[len(self.seqs) - 1 - index] if self.descending else self.seqs[index]

    def index_of(self, seq: int) -> int | None:
        i = bisect.bisect_left(self.seqs, seq)
        if i == len(self.seqs) or self.seqs[i] != seq:
            return None
        return len(self.seqs) - 1 - i if self.descending else i


@dataclass(frozen=True)
class Row:
    """An event with its parsed body, parsed once in the worker that fetched it."""

    event: StoredEvent
    data: dict[str, Any]


@dataclass(frozen=True)
class TrailView:
    """One way of looking at the trail: a filter, an order, and the row-to-seq map."""

    flt: EventFilter
    rows: HeadRows | SeqRows
    descending: bool

    @classmethod
    def load(cls, app: Appliance, session: Session, flt: EventFilter,
             descending: bool = True) -> TrailView:
        if flt.empty:
            rows: HeadRows | SeqRows = HeadRows(audit.count(app, session, flt), descending)
        else:
            rows = SeqRows(audit.matching_seqs(app, session, flt), descending)
        return cls(flt, rows, descending)

    def __len__(self) -> int:
        return len(self.rows)

    def pages(self, size: int = PAGE_SIZE) -> int:
        return (len(self.rows) + size - 1) // size

    def fetch(self, app: Appliance, session: Session, page: int,
              size: int = PAGE_SIZE) -> list[Row]:
        """Rows page*size .. page*size+size-1: one keyset query from the page's first seq."""
        start = page * size
        n = min(size, len(self.rows) - start)
        if n <= 0:
            return []
        first = self.rows.seq_at(start)
        if self.descending:
            events = audit.events(app, session, self.flt, after_seq=first + 1, limit=n,
                                  descending=True)
        else:
            events = audit.events(app, session, self.flt, after_seq=first - 1, limit=n)
        return [Row(e, json.loads(e.text)) for e in events]
