"""Each screen offers a role only the actions it holds (11.10(d), (g)): its footer, its keys,
its buttons and the command palette. The services decide anyway: an action called past
the console's check is refused and recorded (each screen's own tests show that)."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable

from appliance.audit.trail import read_head
from appliance.context import Appliance
from tests.conftest import PASSWORD
from tests.tui.pilot import (
    dashboard_ready,
    log_in,
    log_in_to_audit,
    palette_search,
    settle,
    wait_for,
)
from tui.screens.media import MediaScreen
from tui.screens.provision import ProvisionScreen
from tui.screens.updates import UpdatesScreen
from tui.screens.users import UsersScreen

pytestmark = pytest.mark.asyncio

UPDATES = ("Approve", "Reject", "Install", "Roll back")
ACCOUNTS = ("New", "Grant", "Revoke", "Disable", "Reset pw", "Review")


def footer(app) -> str:
    return [strip.text for strip in app.screen._compositor.render_strips()][-1]


def offered(app, words: tuple[str, ...]) -> set[str]:
    shown = footer(app)
    return {w for w in words if f" {w} " in shown}


async def palette_titles(pilot, words: str) -> list[str]:
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
    found = await palette_search(pilot, words)
    titles = [str(found.get_option_at_index(i).prompt).split("\n")[0]
              for i in range(found.option_count)]
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, CommandPalette))
    return titles


async def enter(pilot, username: str, key: str, screen: type) -> None:
    await log_in(pilot, username, PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen), what=screen.__name__)
    await settle(pilot)


@pytest.mark.parametrize("roles, expected", [
    (["auditor"], set()),
    (["ml"], set()),
    (["security"], set()),
    (["it"], {"Install"}),
    (["admin"], set(UPDATES)),
])
async def test_updates_screen_offers_each_role_only_what_it_may_do(
        make_console, make_user, imported: str, history: Appliance, roles, expected):
    make_user(roles, "rowan")
    app = make_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await enter(pilot, "rowan", "b", UpdatesScreen)
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, what="the bundle list")
        assert offered(app, UPDATES) == expected, footer(app)
        if "Approve" not in expected:
            start = read_head(history.conn).seq
            await pilot.press("a", "x", "b")
            await settle(pilot)
            assert isinstance(app.screen, UpdatesScreen)   # no signature dialog
            assert read_head(history.conn).seq == start    # nothing asked of the service


@pytest.mark.parametrize("roles, expected, commands", [
    (["auditor"], set(), set()),
    (["admin"], set(), {"Record training"}),
    (["security"], set(ACCOUNTS), {"Enable account", "Unlock account", "Review access"}),
])
async def test_users_screen_offers_each_role_only_what_it_may_do(
        make_console, make_user, history: Appliance, roles, expected, commands):
    make_user(roles, "rowan")
    app = make_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await enter(pilot, "rowan", "u", UsersScreen)
        assert offered(app, ACCOUNTS) == expected, footer(app)
        shown = set(await palette_titles(pilot, "account"))
        shown |= set(await palette_titles(pilot, "training"))
        shown |= set(await palette_titles(pilot, "review access"))
        assert shown & {"Enable account", "Unlock account", "Record training",
                        "Review access"} == commands
        if not expected:
            start = read_head(history.conn).seq
            await pilot.press("n", "d", "r")
            await settle(pilot)
            assert isinstance(app.screen, UsersScreen)     # no dialog to fill in for nothing
            assert read_head(history.conn).seq == start


async def test_provisioning_history_without_run_buttons_for_those_who_only_read(
        make_console, history: Appliance, make_user):
    make_user(["auditor"], "rowan")
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await enter(pilot, "rowan", "p", ProvisionScreen)
        shown = footer(app)
        assert "Check" not in shown and " Run " not in shown and "Cancel" not in shown
        assert "Open run" in shown
        assert not any(app.screen.query_one(b).display
                       for b in ("#prov-check", "#prov-run", "#prov-cancel"))
        start = read_head(history.conn).seq
        await pilot.press("c", "g", "x")
        await settle(pilot)
        assert not app.screen.busy and read_head(history.conn).seq == start


async def test_media_screen_offers_import_only_to_it(make_console, trusted: Appliance,
                                                     make_user):
    make_user(["admin"], "rowan")
    make_user(["it"], "ivy")
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await enter(pilot, "rowan", "m", MediaScreen)
        assert "Scan" in footer(app) and "Import" not in footer(app)
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await enter(pilot, "ivy", "m", MediaScreen)
        assert "Import" in footer(app)


async def test_the_palette_offers_verify_and_export_only_to_those_who_hold_them(
        make_console, make_user):
    make_user(["ml"], "mina")
    app = make_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await log_in_to_audit(pilot, "mina", PASSWORD)
        titles = await palette_titles(pilot, "audit trail")
        assert "Audit trail" in titles
        assert "Export audit trail" not in titles and "Verify audit trail" not in titles
