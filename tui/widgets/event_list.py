"""A virtual list of audit events (Line API): rows are fetched by seq in pages, on demand.

Only the visible pages and an LRU of recent ones are in memory, so a trail of millions of
events opens as fast as an empty one. Pages load in a thread worker; until one arrives its
rows show as loading, and the UI never waits on SQLite.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from appliance.context import Appliance
from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.text import shown
from tui.trail_view import PAGE_SIZE, Row, TrailView

CACHE_PAGES = 64


@dataclass(frozen=True)
class Columns:
    """Column widths for a given width; the target column takes what is left."""

    seq: int
    ts: int
    actor: int
    action: int
    outcome: int
    target: int

    @classmethod
    def fit(cls, width: int, max_seq: int) -> Columns:
        seq = max(3, len(str(max_seq)))
        ts = 23 if width >= 110 else 19
        actor = 12 if width >= 110 else 9
        action = 22 if width >= 110 else 17
        outcome = 7
        used = seq + 1 + ts + actor + action + outcome + 5
        return cls(seq, ts, actor, action, outcome, max(6, width - used))

    def header(self) -> str:
        return self.line(("seq", "", "time (UTC)", "actor", "action", "target", "outcome"))

    def cells(self, data: dict[str, Any]) -> tuple[str, ...]:
        target = data["target"]
        flag = "S" if data.get("signature") else ("!" if data.get("clock_warning") else " ")
        return (str(data["seq"]), flag, data["ts"].replace("T", " ").rstrip("Z")[: self.ts],
                data["actor"]["username"], data["action"],
                f"{target['type']}:{target['id']}" if target["type"] else "",
                data["outcome"])

    def line(self, cells: tuple[str, ...]) -> str:
        seq, flag, ts, actor, action, target, outcome = cells
        return (f"{seq:>{self.seq}}{flag or ' '} {_fit(ts, self.ts)} {_fit(actor, self.actor)} "
                f"{_fit(action, self.action)} {_fit(target, self.target)} "
                f"{_fit(outcome, self.outcome)}")


def _fit(text: str, width: int) -> str:
    text = shown(text)  # a stored newline or escape must not break or recolour the line
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


class EventList(ScrollView, can_focus=True):
    """The audit trail, one event a line, newest first unless the view says otherwise."""

    COMPONENT_CLASSES = {"event-list--cursor", "event-list--loading", "event-list--failure",
                         "event-list--denied", "event-list--seq"}

    DEFAULT_CSS = """
    EventList {
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
        & > .event-list--cursor { background: $surface-lighten-2; }
        &:focus > .event-list--cursor { background: $accent; color: $text; text-style: bold; }
        & > .event-list--loading { color: $text-muted; text-style: italic; }
        & > .event-list--failure { color: $error; }
        & > .event-list--denied { color: $warning; }
        & > .event-list--seq { color: $text-muted; }
    }
    """

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class Highlighted(Message):
        """The cursor rests on a loaded event (or the list is empty: row is None)."""

        def __init__(self, row: Row | None) -> None:
            super().__init__()
            self.row = row

    class PageLoaded(Message):
        def __init__(self, generation: int, page: int, rows: list[Row]) -> None:
            super().__init__()
            self.generation, self.page, self.rows = generation, page, rows

    class ColumnsFitted(Message):
        """The columns were fitted to a new width (a resize, or the scrollbar coming or
        going once the rows are counted): the header above the list follows."""

    class LoadFailed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, open_appliance: Callable[[], Appliance], session: Session, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self._open = open_appliance
        self._session = session
        self.view: TrailView | None = None
        self._cache: OrderedDict[int, list[Row]] = OrderedDict()
        self._generation = 0
        self._wanted: set[int] = set()
        self._load_scheduled = False
        self.columns = Columns.fit(80, 1)
        self._fitted_width = 0

    # -- what is shown ---------------------------------------------------------------

    def show(self, view: TrailView, keep_seq: int | None = None) -> None:
        """Show a new view; keep the cursor on `keep_seq` when it is still in the view."""
        self.view = view
        self._generation += 1
        self._cache.clear()
        self._wanted = set()
        self._fit_columns()
        self.virtual_size = Size(self.scrollable_content_region.width, len(view))
        index = view.rows.index_of(keep_seq) if keep_seq is not None else None
        if index is None:
            self.scroll_to(y=0, animate=False, immediate=True)
        self.cursor = self._clamp(index or 0)
        self.refresh()

    @property
    def current(self) -> Row | None:
        return self._row(self.cursor) if self.view and len(self.view) else None

    def is_loaded(self) -> bool:
        """Every visible row is in the cache (tests and timing wait on this)."""
        if self.view is None:
            return False
        return all(p in self._cache for p in self._visible_pages())

    def _fit_columns(self) -> None:
        max_seq = self.view.rows.seq_at(0) if self.view and len(self.view) else 1
        if self.view and len(self.view) and not self.view.descending:
            max_seq = self.view.rows.seq_at(len(self.view) - 1)
        width = self.scrollable_content_region.width
        columns = Columns.fit(width or 80, max_seq)
        self._fitted_width = width
        if columns != self.columns:
            self.columns = columns
            self.post_message(self.ColumnsFitted())

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()
        if self.view is not None:
            self.virtual_size = Size(self.scrollable_content_region.width, len(self.view))
        self._scroll_cursor_visible()

    # -- rendering -------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if width != self._fitted_width:  # the scrollbar came or went since the last fit
            self._fit_columns()
        base = self.rich_style
        index = self.scroll_offset.y + y
        if self.view is None or index >= len(self.view):
            return Strip.blank(width, base)
        row = self._row(index)
        line_style = base + self.get_component_rich_style("event-list--cursor") \
            if index == self.cursor else base
        if row is None:
            self._request_load()
            seq = self.view.rows.seq_at(index)
            text = f"{seq:>{self.columns.seq}}  loading…"
            style = line_style + self.get_component_rich_style("event-list--loading")
            return Strip([Segment(text, style)]).adjust_cell_length(width, line_style)
        return Strip(self._segments(row.data, line_style, index == self.cursor)
                     ).adjust_cell_length(width, line_style)

    def _segments(self, data: dict[str, Any], style: Style, is_cursor: bool) -> list[Segment]:
        cells = self.columns.cells(data)
        text = self.columns.line(cells)
        seq_end = self.columns.seq + 1
        outcome_start = len(text) - self.columns.outcome
        outcome_style = style
        if data["outcome"] == "failure":
            outcome_style = style + self.get_component_rich_style("event-list--failure")
        elif data["outcome"] == "denied":
            outcome_style = style + self.get_component_rich_style("event-list--denied")
        seq_style = style if is_cursor else style + self.get_component_rich_style(
            "event-list--seq")
        return [Segment(text[:seq_end], seq_style),
                Segment(text[seq_end:outcome_start], style),
                Segment(text[outcome_start:], outcome_style)]

    def _row(self, index: int) -> Row | None:
        page = self._cache.get(index // PAGE_SIZE)
        if page is None:
            return None
        self._cache.move_to_end(index // PAGE_SIZE)
        offset = index % PAGE_SIZE
        return page[offset] if offset < len(page) else None

    # -- loading ---------------------------------------------------------------------

    def _request_load(self) -> None:
        if not self._load_scheduled:
            self._load_scheduled = True
            self.call_later(self._load_visible)

    def _visible_pages(self) -> list[int]:
        assert self.view is not None
        top = self.scroll_offset.y
        bottom = min(len(self.view), top + self.scrollable_content_region.height + 1)
        pages = list(range(top // PAGE_SIZE, max(top, bottom - 1) // PAGE_SIZE + 1))
        # The cursor's page too, so a jump highlights its event as soon as it arrives.
        if self.cursor // PAGE_SIZE not in pages:
            pages.append(self.cursor // PAGE_SIZE)
        return [p for p in pages if p < self.view.pages()]

    def _load_visible(self) -> None:
        self._load_scheduled = False
        if self.view is None:
            return
        needed = [p for p in self._visible_pages() if p not in self._cache]
        if not needed or set(needed) <= self._wanted:
            return
        self._wanted = set(needed)
        self._load_pages(self._generation, self.view, needed)

    @work(thread=True, exclusive=True, group="event-pages", exit_on_error=False)
    def _load_pages(self, generation: int, view: TrailView, pages: list[int]) -> None:
        worker = get_current_worker()
        try:
            with self._open() as app:
                for page in pages:
                    if worker.is_cancelled:
                        return
                    self.post_message(self.PageLoaded(generation, page,
                                                      view.fetch(app, self._session, page)))
        except ApplianceError as exc:
            self.post_message(self.LoadFailed(exc))

    def on_event_list_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._wanted.discard(message.page)
        self._cache[message.page] = message.rows
        while len(self._cache) > CACHE_PAGES:
            self._cache.popitem(last=False)
        if self.cursor // PAGE_SIZE == message.page:
            self.post_message(self.Highlighted(self.current))
        self.refresh()

    # -- cursor ----------------------------------------------------------------------

    def _clamp(self, index: int) -> int:
        n = len(self.view) if self.view else 0
        return max(0, min(index, n - 1)) if n else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_cursor_visible()
        self.refresh()
        if self.view is not None and (len(self.view) == 0 or self.current is not None):
            self.post_message(self.Highlighted(self.current))

    def _scroll_cursor_visible(self) -> None:
        height = self.scrollable_content_region.height
        if height <= 0:
            return
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.cursor = self._clamp(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.cursor = self._clamp(self.cursor + direction * max(1, self.size.height - 1))

    def action_jump(self, where: int) -> None:
        self.cursor = self._clamp(where if where >= 0 else len(self.view or ()) - 1)

    def on_click(self, event: events.Click) -> None:
        if self.view is not None:
            self.cursor = self._clamp(self.scroll_offset.y + event.y)
