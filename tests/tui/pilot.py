"""Driving the console like a person: type, press, and wait for workers to report back."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.command import CommandInput, CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tui.screens.audit import AuditScreen
from tui.screens.dashboard import DashboardScreen
from tui.widgets.event_list import EventList


async def wait_for(pilot: Pilot, predicate: Callable[[], bool], timeout: float = 20.0,
                   what: str = "condition") -> float:
    """Poll between event-loop turns; returns the seconds it took."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.01)
    return time.perf_counter() - start


def text_of(pilot: Pilot, selector: str) -> str:
    return str(pilot.app.screen.query_one(selector, Static).content)


async def type_into(pilot: Pilot, selector: str, text: str) -> None:
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*text)


async def filter_events(pilot: Pilot, events: EventList, field: str, value: str) -> None:
    """Type `value` into the audit screen's `field` filter, press Enter and wait for the
    filtered view to load."""
    await type_into(pilot, f"#filter-{field}", value)
    await pilot.press("enter")
    await wait_for(pilot, lambda: getattr(events.view.flt, field) == value
                   and events.is_loaded(), what="filtered view")


async def fill(pilot: Pilot, selector: str, text: str) -> None:
    """Set an input's value at once (long paths typed key by key only slow the suite)."""
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    widget.value = text
    await pilot.pause()


async def log_in(pilot: Pilot, username: str, password: str, typed: bool = False) -> None:
    enter = type_into if typed else fill
    await enter(pilot, "#username", username)
    await pilot.press("enter")
    await enter(pilot, "#password", password)
    await pilot.press("enter")


async def log_in_to_audit(pilot: Pilot, username: str, password: str) -> EventList:
    """Log in, wait for the dashboard, open the audit screen on its first page."""
    await log_in(pilot, username, password)
    await dashboard_ready(pilot)
    await pilot.press("a")
    return await audit_ready(pilot)


async def palette_search(pilot: Pilot, words: str) -> CommandList:
    """Type `words` into the open command palette and wait until its search of all of
    them has finished; returns the list of hits it left.

    The palette starts a search (a worker of its gather group) at each key, cancelling the
    one before, and shows the hits of the search that ended last, in batches: neither "some
    hits are shown" nor a fixed pause says that the list is the one for the whole of
    `words` (a slow machine still shows the hits of a prefix). Once the keys are handled,
    the input holds all of `words` and the search of it is the group's only live worker:
    its end is waited for."""
    palette = pilot.app.screen
    assert isinstance(palette, CommandPalette)
    await pilot.press(*words)

    def searched() -> bool:
        live = [w for w in pilot.app.workers if w.node is palette and not w.is_finished
                and w.group == CommandPalette._GATHER_COMMANDS_GROUP]
        return palette.query_one(CommandInput).value == words and not live

    await wait_for(pilot, searched, what=f"the search {words!r}")
    await pilot.pause()
    return palette.query_one(CommandList)


async def run_command(pilot: Pilot, words: str) -> None:
    """Open the command palette, type `words` and run the first hit."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
    hits = await palette_search(pilot, words)
    assert hits.option_count > 0, f"no command matches {words!r}"
    await pilot.press("enter")


async def dashboard_ready(pilot: Pilot) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), what="dashboard")
    await wait_for(pilot, lambda: "…" not in text_of(pilot, "#dash-chain")
                   and "…" not in text_of(pilot, "#dash-events")
                   and "…" not in text_of(pilot, "#dash-gpus"), what="dashboard data")


async def audit_ready(pilot: Pilot) -> EventList:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AuditScreen), what="audit screen")
    events = pilot.app.screen.query_one(EventList)
    await wait_for(pilot, lambda: events.is_loaded() and (
        events.current is not None or len(events.view) == 0), what="first page")
    return events


async def settle(pilot: Pilot) -> None:
    """Wait for every worker of the app to finish, then for the messages they posted."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
