"""The console's updates screen driven by Pilot: open, sign the approval in the signature
dialog, install with progress, then a signed rollback, on real signed bundles."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from appliance.context import Appliance
from appliance.settings import save_settings
from appliance.updates.lifecycle import State, find_bundle
from tests.conftest import ADMIN, PASSWORD
from tests.tui.pilot import dashboard_ready, fill, log_in, wait_for
from tests.updates.kit import approve, h100, trust_and_import
from tui.app import build_app
from tui.screens import updates as updates_screen
from tui.screens.dashboard import DashboardScreen
from tui.screens.signature import SignatureDialog
from tui.screens.updates import UpdatesScreen

pytestmark = pytest.mark.asyncio


@pytest.fixture
def imported(app, security, itop, media):
    refs = trust_and_import(app, security, itop, media, 1, 2)
    save_settings(app.layout.config, app.settings)
    return refs


def message(pilot) -> str:
    return str(pilot.app.screen.query_one("#upd-message").content)


async def select(pilot, ref: str) -> None:
    await wait_for(pilot, lambda: bool(pilot.app.screen.query(DataTable)), what="the list")
    table = pilot.app.screen.query_one(DataTable)
    await wait_for(pilot, lambda: ref in [str(k.value) for k in table.rows], what=ref)
    table.move_cursor(row=table.get_row_index(ref))
    await pilot.pause()


async def act(pilot, key: str, expect: str) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: expect in message(pilot) or "error:" in message(pilot),
                   what=expect)
    assert expect in message(pilot), message(pilot)


async def sign(pilot, key: str, reason: str, expect: str, username: str = "") -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SignatureDialog),
                   what="signature dialog")
    dialog = pilot.app.screen
    # The statement only before the first signature ever, the username only before the
    # session's first.
    assert bool(dialog.query("#sig-ack")) == bool(username)
    assert bool(dialog.query("#sig-user")) == bool(username)
    if username:
        await pilot.click("#sig-ack")
    await fill(pilot, "#sig-reason", reason)
    if username:
        await fill(pilot, "#sig-user", username)
    await fill(pilot, "#sig-password", PASSWORD)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, UpdatesScreen),
                   what="back on the updates screen")
    await wait_for(pilot, lambda: expect in message(pilot) or "error:" in message(pilot),
                   what=expect)
    assert expect in message(pilot), message(pilot)


@contextlib.asynccontextmanager
async def on_updates(app: Appliance, clock, size: tuple[int, int] = (80, 24)
                     ) -> AsyncIterator[Pilot]:
    """The console on `app`'s home (its own connection closed first), the admin logged
    in, on the Updates screen."""
    home = app.layout.root
    app.close()
    console = build_app(home, clock, terminal="console-test", gpu_source=h100())
    async with console.run_test(size=size) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        pilot.app.push_screen(UpdatesScreen())
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, UpdatesScreen))
        yield pilot


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_console_approve_install_and_roll_back(app, imported, clock, size) -> None:
    ref1, ref2 = imported
    home = app.layout.root
    async with on_updates(app, clock, size) as pilot:
        for ref in (ref1, ref2):
            await select(pilot, ref)
            await act(pilot, "o", f"{ref}: PENDING_APPROVAL (opened; recorded)")
            view = str(pilot.app.screen.query_one("#upd-view").content)
            assert "publisher: Demo Vendor" in view and "tiny-engine-h100" in view
            await sign(pilot, "a", "evidence meets the gates", f"{ref}: APPROVED",
                       username=ADMIN if ref == ref1 else "")
            await select(pilot, ref)
            await act(pilot, "i", f"{ref}: activated")
            progress = pilot.app.screen.query_one("#upd-progress")
            assert progress.display   # hidden only while empty
            assert "health checks passed" in str(progress.content)
            assert str(progress.content).endswith("ACTIVE")
        await select(pilot, ref1)
        await sign(pilot, "b", "v2 misreads dosages", f"{ref1}: activated")
        progress = str(pilot.app.screen.query_one("#upd-progress").content)
        assert "`current` switched to the new release" in progress
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen))
    with Appliance.open(home) as check:
        assert find_bundle(check.conn, ref1).state == State.ACTIVE
        assert find_bundle(check.conn, ref2).state == State.ROLLED_BACK
        assert os.readlink(home / "releases" / "current") == "demo-clinical/1"


async def test_an_admins_footer_at_80_columns_shows_back_and_every_action(app, imported,
                                                                            clock) -> None:
    """An admin holds every key of the Updates screen: at 80x24 the footer used to run out
    before "Back" and "Quit". Back comes first now, the footer is compact, and the palette
    (ctrl+p, as on every screen, shown on the others) leaves its place to them."""
    from textual.command import CommandPalette
    from textual.widgets._footer import FooterKey

    async with on_updates(app, clock) as pilot:
        await pilot.pause()
        keys = list(pilot.app.screen.query(FooterKey))
        # A palette key is docked at the right, over whatever runs under it.
        palette = [k for k in keys if k.description == "palette"]
        edge = palette[0].region.x if palette else 80
        shown = {k.description for k in keys
                 if k not in palette and k.region.width and k.region.right <= edge}
        assert {"Back", "Open", "Approve", "Reject", "Install", "Roll back", "Refresh",
                "Quit"} <= shown
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette),
                       what="the command palette")


async def test_cancelled_signature_changes_nothing(app, imported, clock) -> None:
    ref1, _ = imported
    home = app.layout.root
    async with on_updates(app, clock) as pilot:
        await select(pilot, ref1)
        await act(pilot, "o", "PENDING_APPROVAL")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, SignatureDialog))
        await pilot.press("escape")
        await wait_for(pilot, lambda: "not signed" in message(pilot))
        await act(pilot, "i", "error: demo-clinical@1 is PENDING_APPROVAL: install is not")
    with Appliance.open(home) as check:
        assert find_bundle(check.conn, ref1).state == State.PENDING_APPROVAL


async def test_keys_pressed_while_an_install_runs_wait_for_it(app, imported, clock,
                                                              admin_session, monkeypatch
                                                              ) -> None:
    """A second i used to wipe the running install's progress and show the service's
    refusal; a or b opened a signature dialog for a password the service had to refuse."""
    ref1, _ = imported
    approve(app, admin_session, ref1)
    go = threading.Event()
    real = updates_screen._Progress.point

    def held(self, label: str) -> None:
        if label == "healthy:committed":
            go.wait(10)   # the health checks take a while
        real(self, label)

    monkeypatch.setattr(updates_screen._Progress, "point", held)
    async with on_updates(app, clock) as pilot:
        await select(pilot, ref1)
        await pilot.press("i")
        progress = pilot.app.screen.query_one("#upd-progress")
        await wait_for(pilot, lambda: "switched to the new release" in str(progress.content),
                       what="the install under way")
        for key in ("i", "a", "b"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert isinstance(pilot.app.screen, UpdatesScreen)   # no dialog
            assert message(pilot) == f"wait: installing {ref1} is still running"
            assert "switched to the new release" in str(progress.content)
        go.set()
        await wait_for(pilot, lambda: f"{ref1}: activated" in message(pilot), what="done")
        assert str(progress.content).endswith("ACTIVE")
