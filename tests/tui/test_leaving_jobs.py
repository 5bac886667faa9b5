"""Leaving a screen while its job runs: the job goes on, is recorded, and the console says
how it ended. An export or an import used to be abandoned, unsaid, at its next progress
report, whose screen was gone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.audit.trail import iter_events, read_head
from appliance.context import Appliance
from appliance.services import audit_export, media
from tests.conftest import ADMIN, PASSWORD
from tests.tui.pilot import dashboard_ready, fill, log_in_to_audit, wait_for
from tests.tui.test_media_screen import open_media
from tui.screens.audit import AuditScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.export import ExportDialog
from tui.screens.media import MediaScreen

pytestmark = pytest.mark.asyncio


def held_at_progress(monkeypatch: pytest.MonkeyPatch, module, name: str
                     ) -> tuple[threading.Event, list[str]]:
    """Wrap `module.name`'s progress callback: its reports after the first wait until the
    returned event is set (the screen left meanwhile); what they raise is listed."""
    left, raised = threading.Event(), []
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        progress = args[-1]
        calls = 0

        def held(*p):
            nonlocal calls
            calls += 1
            if calls > 1:
                left.wait(10)
            try:
                progress(*p)
            except Exception as exc:
                raised.append(repr(exc))
                raise
        return real(*args[:-1], held, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return left, raised


async def test_leaving_the_audit_screen_during_an_export_finishes_the_export(
        make_console, history: Appliance, tmp_path: Path, monkeypatch):
    left, raised = held_at_progress(monkeypatch, audit_export, "export_trail")
    out = tmp_path / "exports"
    out.mkdir()
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        await fill(pilot, "#export-out", str(out))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen)
                       and app.screen.busy == "export", what="the export")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        left.set()
        await wait_for(pilot, lambda: any(out.glob("*.manifest.json")), what="the export")
        await wait_for(pilot, lambda: len(app._notifications) == 1, what="the notice")
    assert raised == []
    [note] = app._notifications  # the screen's own line is gone: the console says it
    assert note.message.startswith("Exported ") and str(out) in note.message
    assert [p.suffix for p in sorted(out.iterdir())] == [".csv", ".json"]
    exported = [e.data for e in iter_events(history.conn, 1)
                if e.data["action"] == "audit.export"]
    assert exported and exported[-1]["outcome"] == "success"


async def test_leaving_the_media_screen_during_an_import_finishes_the_import(
        make_console, make_user, trusted: Appliance, usb: Path, monkeypatch):
    left, raised = held_at_progress(monkeypatch, media, "import_bundle")
    make_user(["it"], "ivan")
    start = read_head(trusted.conn).seq
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        table = await open_media(pilot, "ivan")
        await fill(pilot, "#media-path", str(usb / "a-good"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1, what="the scan")
        await pilot.press("i")
        await wait_for(pilot, lambda: app.screen.busy, what="the import")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, MediaScreen))
        left.set()
        await wait_for(pilot, lambda: any(e.data["action"] == "media.import" for e in
                                          iter_events(trusted.conn, start + 1)),
                       what="the import's event")
        await dashboard_ready(pilot)
        await wait_for(pilot, lambda: len(app._notifications) == 1, what="the notice")
    assert raised == []
    [note] = app._notifications
    assert note.message.startswith("imported ") and "copied" in note.message, note.message
    [event] = [e.data for e in iter_events(trusted.conn, start + 1)
               if e.data["action"] == "media.import"]
    assert event["outcome"] == "success"
