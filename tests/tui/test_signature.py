"""The one signature dialog, driven by Pilot (11.200(a), 11.10(j), 11.10(d)): the users
screen's access review and the updates screen's approval both sign through it."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import DataTable

from appliance.audit.trail import iter_events, read_head
from appliance.context import Appliance
from appliance.services import signing
from tests.conftest import ADMIN, PASSWORD
from tests.tui.conftest import AUDITOR
from tests.tui.pilot import dashboard_ready, fill, log_in, settle, text_of, wait_for
from tui.screens.dashboard import DashboardScreen
from tui.screens.signature import SignatureDialog
from tui.screens.updates import UpdatesScreen
from tui.screens.users import UsersScreen

pytestmark = pytest.mark.asyncio


def events_since(app: Appliance, seq: int) -> list[dict]:
    return [e.data for e in iter_events(app.conn, seq + 1)]


def signatures(app: Appliance) -> int:
    return app.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0]


async def open_users(pilot) -> None:
    await log_in(pilot, ADMIN, PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("u")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, UsersScreen)
                   and pilot.app.screen.query_one(DataTable).row_count > 0, what="users")


async def open_review(pilot) -> set[str]:
    """Open the access review's signature dialog; returns the ids of what it asks."""
    await pilot.press("r")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SignatureDialog),
                   what="signature dialog")
    return {w.id for w in pilot.app.screen.query("*") if w.id}


async def sign(pilot, password: str = PASSWORD, username: str = "",
               ack: bool = False) -> SignatureDialog:
    """Fill the open dialog and press Sign; returns the dialog."""
    dialog = pilot.app.screen
    if ack:
        await pilot.click("#sig-ack")
    await fill(pilot, "#sig-reason", "quarterly access review")
    if username:
        await fill(pilot, "#sig-user", username)
    await fill(pilot, "#sig-password", password)
    await pilot.click("#sig-ok")
    return dialog


async def result(pilot) -> str:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, UsersScreen)
                   and "…" not in text_of(pilot, "#users-message")
                   and text_of(pilot, "#users-message") != "", what="signing result")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return text_of(pilot, "#users-message")


async def test_11_200_first_signature_asks_username_and_statement_later_only_password(
        make_console, history: Appliance):
    start = read_head(history.conn).seq
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_users(pilot)
        # Asked: the statement with its checkbox, reason, username and password.
        asked = await open_review(pilot)
        assert {"sig-statement", "sig-ack", "sig-reason", "sig-user", "sig-password"} <= asked
        assert "legally binding" in text_of(pilot, "#sig-statement")
        await sign(pilot, username=ADMIN, ack=True)
        assert (await result(pilot)).startswith(
            "access review signed: reviewed by Alice Adams (alice) at ")

        # The same session signs again: only reason and password.
        asked = await open_review(pilot)
        assert {"sig-reason", "sig-password"} <= asked
        assert not {"sig-user", "sig-statement", "sig-ack"} & asked
        await sign(pilot)
        assert (await result(pilot)).startswith("access review signed: reviewed by Alice")
        assert app.session.signatures == 2
    events = events_since(history, start)
    actions = [e["action"] for e in events]
    assert actions.count("signature.statement_acknowledged") == 1
    reviews = [e for e in events if e["action"] == "user.access_review"]
    assert [(r["signature"]["meaning"], r["signature"]["username"]) for r in reviews] == [
        ("reviewed", ADMIN)] * 2
    assert signatures(history) == 2


async def test_the_first_signature_dialog_reaches_its_buttons_on_a_small_terminal(
        make_console, history: Appliance):
    """At 60x20 the first signature's dialog (statement, username) is taller than the
    screen: it scrolls, so the Sign button comes into view when it takes the focus."""
    app = make_console()
    async with app.run_test(size=(60, 20)) as pilot:
        await open_users(pilot)
        await open_review(pilot)
        dialog = pilot.app.screen

        def in_view(widget) -> bool:  # scrolled there after a refresh: waited for
            return widget.region.height > 0 and dialog.region.contains_region(widget.region)

        button, ack = dialog.query_one("#sig-ok"), dialog.query_one("#sig-ack")
        button.focus()
        await wait_for(pilot, lambda: in_view(button), what="the Sign button in view")
        ack.focus()  # and back up to the statement's checkbox
        await wait_for(pilot, lambda: in_view(ack), what="the checkbox in view")
        await pilot.press("space")
        assert ack.value


async def test_11_200_wrong_password_shows_the_error_and_signs_nothing(
        make_console, history: Appliance):
    start = read_head(history.conn).seq
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_users(pilot)
        # The dialog itself keeps an unacknowledged statement from costing a password try.
        await open_review(pilot)
        dialog = await sign(pilot, password="not the password", username=ADMIN)
        assert pilot.app.screen is dialog
        assert "accept the signature statement" in text_of(pilot, "#sig-error")
        await pilot.click("#sig-ack")
        # Enter in the password field signs (a second click on Sign within Textual's 0.2 s
        # press animation would be ignored).
        dialog.query_one("#sig-password").focus()
        await pilot.press("enter")
        message = await result(pilot)
        assert message.startswith("signature not applied: wrong password")
        assert app.session.signatures == 0
    events = events_since(history, start)
    assert not [e for e in events if e["action"] in ("user.access_review",
                                                     "signature.statement_acknowledged")]
    failure = next(e for e in events if e["action"] == "signature.reauth")
    assert (failure["outcome"], failure["details"]["reason"]) == ("failure", "wrong password")
    assert signatures(history) == 0
    assert history.conn.execute("SELECT signature_ack_at FROM users WHERE username = ?",
                                (ADMIN,)).fetchone()[0] is None


async def test_11_10_d_auditor_opening_an_approval_is_refused_before_any_password(
        make_console, imported: str, history: Appliance):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, AUDITOR, PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, UpdatesScreen))
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, what="the bundle list")
        start = read_head(history.conn).seq
        # Not offered (a does nothing); past the console's check the service refuses.
        await pilot.press("a")
        await pilot.pause()
        assert read_head(history.conn).seq == start
        app.screen.action_approve()
        await wait_for(pilot, lambda: "error:" in text_of(pilot, "#upd-message"),
                       what="the refusal")
        assert not any(isinstance(s, SignatureDialog) for s in app.screen_stack)
        assert text_of(pilot, "#upd-message") == (
            f"error: {AUDITOR} may not update.approve (needs role: admin) (ask a user with "
            "the required role; the denial was recorded)")
    denied = [e for e in events_since(history, start) if e["action"] == "access.denied"]
    assert [(e["actor"]["username"], e["target"]["id"], e["details"]["permission"])
            for e in denied] == [(AUDITOR, imported, "update.approve")]
    assert signatures(history) == 1  # only the trust root's, from the fixture


async def test_leaving_the_screen_while_the_signature_is_checked_opens_no_dialog(
        make_console, history: Appliance, monkeypatch: pytest.MonkeyPatch):
    """The dialog used to open over the dashboard once the check returned; signing in it
    then ended the console with NoMatches (the screen it signed for was gone)."""
    checked = threading.Event()
    real = signing.prompt

    def slow_prompt(*args, **kwargs):
        checked.wait(5)   # the check is slow (a busy disk): the user leaves meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(signing, "prompt", slow_prompt)
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_users(pilot)
        await pilot.press("r", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        checked.set()
        await settle(pilot)
        assert [type(s) for s in app.screen_stack][1:] == [DashboardScreen]
        [note] = app._notifications
        assert note.message.startswith("not signed: access review")
    assert signatures(history) == 0


async def test_review_pressed_twice_before_the_check_returns_opens_one_dialog(
        make_console, history: Appliance, monkeypatch: pytest.MonkeyPatch):
    """r r on a slow check used to stack two dialogs: once the first was signed, the second
    asked to sign the same review again."""
    checked = threading.Semaphore(0)
    real = signing.prompt

    def slow_prompt(*args, **kwargs):
        checked.acquire(timeout=5)   # a busy disk: the key is pressed again meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(signing, "prompt", slow_prompt)
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_users(pilot)
        await pilot.press("r", "r")
        checked.release()
        checked.release()
        await wait_for(pilot, lambda: isinstance(app.screen, SignatureDialog),
                       what="signature dialog")
        await settle(pilot)
        assert [type(s) for s in app.screen_stack].count(SignatureDialog) == 1
        await sign(pilot, username=ADMIN, ack=True)
        assert (await result(pilot)).startswith("access review signed: ")
        assert isinstance(app.screen, UsersScreen)
    assert signatures(history) == 1
