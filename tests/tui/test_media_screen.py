"""The media screen on the real signed demo releases: scan a typed path, import with
progress, and a tampered copy refused in one line with nothing left in the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, ProgressBar

from appliance.audit.trail import iter_events, read_head
from appliance.bundle.progress import ImportProgress
from appliance.context import Appliance
from tests.conftest import ADMIN, PASSWORD
from tests.tui.pilot import dashboard_ready, fill, log_in, run_command, settle, text_of, wait_for
from tui.screens.media import MediaScreen
from tui.screens.reclaim import ReclaimDialog
from tui.widgets.transfer import TransferProgress, eta_text, human_bytes, progress_line


def row(table: DataTable, key: Path) -> list[str]:
    return [str(c) for c in table.get_row(str(key))]


def store_objects(app: Appliance) -> list[Path]:
    return sorted(p for p in (app.layout.store / "sha256").rglob("*") if p.is_file())


async def open_media(pilot, username: str) -> DataTable:
    await log_in(pilot, username, PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("m")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MediaScreen), what="media")
    return pilot.app.screen.query_one(DataTable)


def message(pilot) -> str:
    return text_of(pilot, "#media-message")


async def import_selected(pilot, table: DataTable, key: Path) -> str:
    table.move_cursor(row=table.get_row_index(str(key)))
    await pilot.pause()
    await pilot.press("i")
    await wait_for(pilot, lambda: not pilot.app.screen.busy, what="the import")
    await settle(pilot)
    return message(pilot)


@pytest.mark.asyncio
async def test_scan_a_path_then_import_with_progress_and_refuse_a_tampered_copy(
        make_console, make_user, trusted: Appliance, usb: Path):
    make_user(["it"], "ivan")
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        table = await open_media(pilot, "ivan")
        await fill(pilot, "#media-path", str(usb))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "found" in message(pilot), what="the scan")
        assert message(pilot) == "3 bundles found; select one and press i to import"
        good, bad, v2 = usb / "a-good", usb / "b-tampered", usb / "c-v2"
        # Metadata and signatures verify for both copies: the flipped byte is in payload.
        assert row(table, good) == ["demo-clinical", "1", "Demo Vendor", "5",
                                    row(table, good)[4], "new", "a-good"]
        assert row(table, bad)[5] == "new" and row(table, v2)[:2] == ["demo-clinical", "2"]
        assert "tiny-base" in text_of(pilot, "#media-detail")

        start = read_head(trusted.conn).seq
        refused = await import_selected(pilot, table, bad)
        assert refused.startswith("error: ") and "\n" not in refused
        assert "model.safetensors" in refused
        assert store_objects(trusted) == []
        assert not app.screen.query_one(TransferProgress).display

        done = await import_selected(pilot, table, good)
        assert done.startswith("imported demo-clinical v1 by Demo Vendor: IMPORTED; copied ")
        bar = app.screen.query_one("#transfer-bar", ProgressBar)
        assert bar.total is not None and bar.progress == bar.total
        line = app.screen.query_one(TransferProgress).line
        assert line.startswith(f"{human_bytes(bar.total)} of {human_bytes(bar.total)}, ")
        # The list is scanned again: release 1 is in, release 2 is now an update.
        await wait_for(pilot, lambda: row(table, good)[5] == "imported", what="the rescan")
        assert row(table, v2)[5] == "update"
        table.move_cursor(row=table.get_row_index(str(v2)))
        await pilot.pause()
        assert text_of(pilot, "#media-detail").startswith(f"{v2}: update (installed: v1)")
    events = [e.data for e in iter_events(trusted.conn, start + 1)
              if e.data["action"] == "media.import"]
    assert [(e["outcome"], e["details"]["source"]) for e in events] == [
        ("failure", str(bad)), ("success", str(good))]
    assert events[1]["actor"]["username"] == "ivan"


@pytest.mark.asyncio
async def test_admin_may_scan_but_import_is_refused_in_one_line(make_console, trusted,
                                                                usb: Path):
    """The screen does not offer an admin Import (i does nothing); called past that check,
    the service refuses it in one line."""
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        # The command palette reaches the screen too.
        await run_command(pilot, "media")
        await wait_for(pilot, lambda: isinstance(app.screen, MediaScreen), what="media")
        table = app.screen.query_one(DataTable)
        await fill(pilot, "#media-path", str(usb / "a-good"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1, what="the scan")
        table.move_cursor(row=table.get_row_index(str(usb / "a-good")))
        await pilot.press("i")
        await settle(pilot)
        assert not app.screen.busy and message(pilot) == "1 bundle found; select one and " \
            "press i to import"
        app.screen.action_import()
        await wait_for(pilot, lambda: not app.screen.busy, what="the import")
        await settle(pilot)
        assert message(pilot) == ("error: alice may not media.import (needs role: it) (ask a user "
                           "with the required role; the denial was recorded)")
    assert trusted.conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 0


@pytest.mark.asyncio
async def test_reclaim_shows_what_would_go_asks_a_reason_then_removes_it(
        make_console, trusted: Appliance, imported: str):
    """An import never resumed left an object no bundle records: IT reclaims it from the
    console; the bundle's own objects stay, and the audit trail has who and why."""
    objects = store_objects(trusted)
    stray = trusted.layout.store / "sha256" / "ab" / ("ab" * 32)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"left by an interrupted import")
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_media(pilot, "ivan")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ReclaimDialog), what="the dialog")
        summary = text_of(pilot, "#reclaim-summary")
        assert summary.startswith("1 object, 29 B, 1 recorded by no bundle")
        await pilot.press("enter")  # no reason yet: refused in the dialog
        assert text_of(pilot, "#reclaim-note") == "a reason is needed"
        await fill(pilot, "#reclaim-reason", "stray object after a pulled stick")
        await pilot.press("enter")
        await wait_for(pilot, lambda: message(pilot).startswith("reclaimed"), what="reclaim")
        assert message(pilot) == (f"reclaimed 29 B: removed 1 object; kept {len(objects)} "
                                  f"objects ({human_bytes(sum(o.stat().st_size for o in objects))})")
        await pilot.press("r")  # nothing left: said at once, no dialog
        await wait_for(pilot, lambda: message(pilot).startswith("nothing to reclaim"),
                       what="the second reclaim")
        assert not isinstance(app.screen, ReclaimDialog)
    assert store_objects(trusted) == objects
    [event] = [e.data for e in iter_events(trusted.conn) if e.data["action"] == "store.reclaim"]
    assert event["actor"]["username"] == "ivan"
    assert event["reason"] == "stray object after a pulled stick"


@pytest.mark.asyncio
async def test_reclaim_is_offered_only_to_it(make_console, trusted: Appliance, imported: str):
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MediaScreen), what="media")
        assert app.screen.check_action("reclaim", ()) is False
        await pilot.press("r")
        await settle(pilot)
        assert not isinstance(app.screen, ReclaimDialog)


def test_progress_line_shows_bytes_rate_eta_and_file():
    p = ImportProgress(3 * 1024**2 // 2, 4 * 1024**2, 20 * 1024**2, 125.0,
                       "targets/tiny-base/model.safetensors")
    assert progress_line(p) == ("1.5 MiB of 4.0 MiB, 20.0 MiB/s, ETA 2:05, "
                                "targets/tiny-base/model.safetensors")
    assert progress_line(ImportProgress(0, 10, 0.0, None, "")) == (
        "0 B of 10 B, 0 B/s, ETA --:--")
    assert (eta_text(3725), human_bytes(5 * 1024**3)) == ("1:02:05", "5.0 GiB")
