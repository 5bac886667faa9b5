"""Row-to-seq maps and filter parsing: the logic under the virtual list, without a UI."""

from __future__ import annotations

from array import array

import pytest

from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.errors import InvalidInput
from appliance.identity.session import Session
from tui.filters import build_filter, parse_time
from tui.trail_view import HeadRows, SeqRows, TrailView


def test_head_rows_map_both_ways_in_both_orders():
    newest = HeadRows(10, descending=True)
    oldest = HeadRows(10, descending=False)
    assert [newest.seq_at(i) for i in (0, 9)] == [10, 1]
    assert [oldest.seq_at(i) for i in (0, 9)] == [1, 10]
    assert newest.index_of(10) == 0 and oldest.index_of(10) == 9
    assert newest.index_of(11) is None and oldest.index_of(0) is None


def test_seq_rows_map_both_ways_and_miss_unmatched_seqs():
    rows = SeqRows(array("q", [3, 7, 19]), descending=True)
    assert [rows.seq_at(i) for i in range(3)] == [19, 7, 3]
    assert rows.index_of(7) == 1 and rows.index_of(8) is None
    assert SeqRows(array("q", [3, 7, 19]), descending=False).index_of(19) == 2


def test_pages_of_a_filtered_view_hold_exactly_its_rows(history: Appliance,
                                                        admin_session: Session):
    flt = EventFilter(action="update.*")
    view = TrailView.load(history, admin_session, flt, descending=True)
    page = view.fetch(history, admin_session, 0, size=2)
    assert [r.data["action"] for r in page] == ["update.install", "update.approve"]
    assert [r.event.seq for r in page] == [view.rows.seq_at(0), view.rows.seq_at(1)]
    rest = view.fetch(history, admin_session, 1, size=2) + view.fetch(
        history, admin_session, 2, size=2)
    assert [r.data["action"] for r in rest] == ["update.import"] * 3
    assert view.fetch(history, admin_session, 3, size=2) == []


def test_unfiltered_pages_ascending_and_descending_agree(history: Appliance,
                                                         admin_session: Session):
    up = TrailView.load(history, admin_session, EventFilter(), descending=False)
    down = TrailView.load(history, admin_session, EventFilter(), descending=True)
    seqs_up = [r.event.seq for p in range(up.pages(4)) for r in up.fetch(history,
                                                                          admin_session, p, 4)]
    seqs_down = [r.event.seq for p in range(down.pages(4))
                 for r in down.fetch(history, admin_session, p, 4)]
    assert seqs_up == list(range(1, len(up) + 1)) and seqs_down == seqs_up[::-1]


def test_parse_time_accepts_dates_and_iso_and_rejects_words():
    assert parse_time("2026-01-15") == "2026-01-15T00:00:00.000Z"
    assert parse_time("2026-01-15", end_of_day=True) == "2026-01-16T00:00:00.000Z"
    assert parse_time("2026-01-15 09:30") == "2026-01-15T09:30:00.000Z"
    assert parse_time("2026-01-15T09:30:01.250Z") == "2026-01-15T09:30:01.250Z"
    assert parse_time("  ") is None
    with pytest.raises(InvalidInput, match="not a time"):
        parse_time("yesterday")


def test_build_filter_parses_target_and_refuses_empty_ranges():
    assert build_filter(target="bundle:abc") == EventFilter(target_type="bundle",
                                                            target_id="abc")
    assert build_filter(target="bundle:") == EventFilter(target_type="bundle")
    assert build_filter(target="abc", actor=" Bob ") == EventFilter(target_id="abc",
                                                                    actor="Bob")
    with pytest.raises(InvalidInput, match="empty"):
        build_filter(since="2026-01-16", until="2026-01-15")
