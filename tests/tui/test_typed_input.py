"""What an operator may type into the console's free-text fields: a date past the calendar,
a path the OS refuses, a home directory that does not exist. Each is one line on the
screen, and the console keeps running (these used to end it with a traceback)."""

from __future__ import annotations

import pytest

from appliance.audit.trail import iter_events
from tests.conftest import ADMIN, PASSWORD
from tests.tui.pilot import (
    dashboard_ready,
    fill,
    log_in,
    log_in_to_audit,
    settle,
    text_of,
    wait_for,
)
from tui.screens.audit import AuditScreen
from tui.screens.export import ExportDialog
from tui.screens.media import MediaScreen

pytestmark = pytest.mark.asyncio


async def _export_to(pilot, dest: str) -> None:
    """Open the export dialog from the audit screen and submit `dest` as typed."""
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExportDialog))
    await fill(pilot, "#export-out", dest)
    await pilot.press("enter")


def _screen_lines(app) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def test_an_until_date_at_the_end_of_the_calendar_is_refused(make_console) -> None:
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await fill(pilot, "#filter-until", "9999-12-31")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, AuditScreen)
        assert "not a time: '9999-12-31'" in app.screen.query_one("#job").message


@pytest.mark.parametrize("dest, says", [
    ("~nosuchuser_xyz/x.csv", "does not exist"),
    ("/tmp/a\x00b.csv", "cannot export to"),
    ("/" + "a" * 300, "cannot export to"),
])
async def test_an_export_destination_the_os_refuses_is_one_line(make_console, dest: str,
                                                                says: str) -> None:
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await _export_to(pilot, dest)
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen)
                       and app.screen.busy is None and says in app.screen.query_one("#job").message)
        assert app.screen.query_one("#job").message.startswith("export failed: ")


@pytest.mark.parametrize("path, says", [
    ("~nosuchuser_xyz/bundle", "No such file or directory"),
    ("/" + "a" * 300, "File name too long"),
    ("/media/usbstick/does-not-exist", "No such file or directory"),
])
async def test_a_media_path_that_cannot_be_read_says_why(make_console, make_user, path: str,
                                                         says: str) -> None:
    make_user(["it"], "ivy")
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in(pilot, "ivy", PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MediaScreen))
        await fill(pilot, "#media-path", path)
        await pilot.press("enter")
        await wait_for(pilot, lambda: says in text_of(pilot, "#media-message"))
        assert text_of(pilot, "#media-message").startswith("error: cannot read ")
        assert isinstance(app.screen, MediaScreen)


async def test_an_export_error_keeps_its_cause_at_80_columns(make_console, tmp_path) -> None:
    existing = tmp_path / "exports-for-the-quality-unit" / "audit-trail-2026-01-15.csv"
    existing.parent.mkdir()
    existing.write_text("x")
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await _export_to(pilot, str(existing))
        await wait_for(pilot, lambda: "already exists" in app.screen.query_one("#job").message)
        await settle(pilot)
        shown = " ".join(" ".join(_screen_lines(app)).split())
        assert "already exists" in shown and "choose another" in shown


async def test_export_and_verify_are_offered_only_to_those_who_hold_them(make_console,
                                                                         make_user) -> None:
    make_user(["ml"], "mina")
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in_to_audit(pilot, "mina", PASSWORD)
        footer = _screen_lines(app)[-1]
        assert "Export" not in footer and "Verify" not in footer and "Order" in footer
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, AuditScreen)  # no dialog to fill in for nothing


async def test_a_relative_export_destination_is_said_and_recorded_in_full(
        make_console, history, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)   # where the console was started: nobody at it sees this
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await _export_to(pilot, "trail.csv")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen)
                       and app.screen.busy is None
                       and app.screen.query_one("#job").message.startswith("Exported"))
        assert f" to {tmp_path / 'trail.csv'} (sha256 " in app.screen.query_one("#job").message
    [event] = [e.data for e in iter_events(history.conn, 1)
               if e.data["action"] == "audit.export"]
    assert event["details"]["path"] == str(tmp_path / "trail.csv")
