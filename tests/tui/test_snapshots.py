"""SVG snapshots of every console screen at 80x24 and 120x40 (fixed ids, clock and GPUs).

Regenerate after an intended change with `pytest tests/tui --snapshot-update` and review
the SVGs; a second run must then pass unchanged.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from textual.widgets import DataTable

from appliance.demo import mark_demo
from appliance.services import users
from tests.conftest import ADMIN, PASSWORD, SteppingClock
from tests.tui.pilot import (
    audit_ready,
    dashboard_ready,
    fill,
    filter_events,
    log_in,
    type_into,
    wait_for,
)
from tui.screens.export import ExportDialog
from tui.screens.media import MediaScreen
from tui.screens.password import PasswordChangeScreen
from tui.screens.reclaim import ReclaimDialog
from tui.screens.signature import SignatureDialog
from tui.screens.users import AccountDialog, UsersScreen


@pytest.fixture
def clock() -> SteppingClock:
    """A clock that stands still: the dashboard's workers read it concurrently, so a
    stepping clock would stamp the events they record by a race, and the SVGs with them."""
    still = SteppingClock()
    still.step = timedelta(0)
    return still


SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


async def _dashboard(pilot) -> None:
    await log_in(pilot, ADMIN, PASSWORD)
    await dashboard_ready(pilot)


async def _audit_on_signed_event(pilot) -> None:
    await _dashboard(pilot)
    await pilot.press("a")
    events = await audit_ready(pilot)
    await filter_events(pilot, events, "action", "update.*")
    await pilot.press("down")  # the signed approval
    await wait_for(pilot, lambda: events.current is not None
                   and events.current.data["action"] == "update.approve")
    await pilot.app.workers.wait_for_complete()


async def _export_dialog(pilot) -> None:
    await _dashboard(pilot)
    await pilot.press("a")
    await audit_ready(pilot)
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportDialog))
    await type_into(pilot, "#export-out", "/media/usb")


async def _login_failed(pilot) -> None:
    await log_in(pilot, ADMIN, "not the password")
    await wait_for(pilot, lambda: "failed" in str(
        pilot.app.screen.query_one("#login-message").content))


@SIZES
def test_login_screen(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size)


@SIZES
def test_login_failed(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_login_failed)


@SIZES
def test_dashboard(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_dashboard)


@SIZES
def test_audit_screen_with_signed_event(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_audit_on_signed_event)


@SIZES
def test_export_dialog(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_export_dialog)


async def _users(pilot) -> None:
    await _dashboard(pilot)
    await pilot.press("u")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, UsersScreen)
                   and pilot.app.screen.query_one(DataTable).row_count > 0)


async def _new_user_dialog(pilot) -> None:
    await _users(pilot)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AccountDialog))


async def _password_change(pilot) -> None:
    await log_in(pilot, "tempuser", PASSWORD)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PasswordChangeScreen))


@SIZES
def test_users_screen(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_users)


@SIZES
def test_new_user_dialog(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_new_user_dialog)


@SIZES
def test_forced_password_change(snap_compare, make_console, history, admin_session, size):
    users.add_user(history, admin_session, "tempuser", "Temp User", ["auditor"], PASSWORD,
                   "new starter")
    assert snap_compare(make_console(), terminal_size=size, run_before=_password_change)


@SIZES
def test_demo_login_shows_the_demo_logins(snap_compare, make_console, history, size):
    mark_demo(history)
    assert snap_compare(make_console(), terminal_size=size)


async def _first_signature(pilot) -> None:
    await _users(pilot)
    await pilot.press("r")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SignatureDialog))
    await fill(pilot, "#sig-reason", "quarterly access review")


@SIZES
def test_signature_dialog_first_signature(snap_compare, make_console, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_first_signature)


async def _media_scanned(pilot) -> None:
    await log_in(pilot, "ivan", PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("m")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MediaScreen))
    await fill(pilot, "#media-path", "usb")    # relative: the same on every run
    await pilot.press("enter")
    await wait_for(pilot, lambda: "found" in str(
        pilot.app.screen.query_one("#media-message").content))
    await pilot.app.workers.wait_for_complete()
    # The screen sets its column widths itself (DataTable measures on idle, and a frame
    # drawn before that stayed cached with header-wide columns), so no wait is needed here.
    assert pilot.app.screen.query_one(DataTable).row_count == 3


@SIZES
def test_media_screen_after_a_scan(snap_compare, make_console, make_user, trusted, usb,
                                   monkeypatch, size):
    make_user(["it"], "ivan")
    monkeypatch.chdir(usb.parent)
    assert snap_compare(make_console(), terminal_size=size, run_before=_media_scanned)


async def _reclaim_asked(pilot) -> None:
    await log_in(pilot, "ivan", PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("m")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MediaScreen))
    await pilot.press("r")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ReclaimDialog))
    await fill(pilot, "#reclaim-reason", "stray object after a pulled stick")


@SIZES
def test_reclaim_dialog(snap_compare, make_console, make_user, trusted, size):
    """What the store would give back, before IT confirms with a reason."""
    make_user(["it"], "ivan")
    stray = trusted.layout.store / "sha256" / "ab" / ("ab" * 32)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by an interrupted import")
    assert snap_compare(make_console(), terminal_size=size, run_before=_reclaim_asked)
