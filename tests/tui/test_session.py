"""Sessions in the console: forced password change, lockout, idle expiry, logout (11.300)."""

from __future__ import annotations

import pytest

from appliance.audit.trail import iter_events, read_head
from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.services import users
from tests.conftest import ADMIN, PASSWORD
from tests.tui.conftest import AUDITOR
from tests.tui.pilot import (
    dashboard_ready,
    fill,
    log_in,
    log_in_to_audit,
    text_of,
    wait_for,
)
from tui.screens.dashboard import DashboardScreen
from tui.screens.export import ExportDialog
from tui.screens.login import LoginScreen
from tui.screens.password import PasswordChangeScreen
from tui.screens.updates import UpdatesScreen

pytestmark = pytest.mark.asyncio
NEW_PASSWORD = "a brand new passphrase"


def actions_since(app: Appliance, seq: int) -> list[str]:
    return [e.data["action"] for e in iter_events(app.conn, seq + 1)]


async def test_temporary_password_must_be_changed_before_anything_else(
        make_console, history: Appliance, admin_session: Session):
    users.add_user(history, admin_session, "tempuser", "Temp User", ["auditor"], PASSWORD,
                   "new starter")  # a temporary password by default
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "tempuser", PASSWORD)
        await wait_for(pilot, lambda: isinstance(app.screen, PasswordChangeScreen))
        assert "temporary password" in text_of(pilot, "#password-why")
        await pilot.press("a")  # nothing else is reachable
        assert isinstance(app.screen, PasswordChangeScreen)
        assert "Audit trail" not in [c.title for c in app.get_system_commands(app.screen)]

        await fill(pilot, "#old-password", PASSWORD)
        await fill(pilot, "#new-password", NEW_PASSWORD)
        await fill(pilot, "#repeat-password", NEW_PASSWORD + "x")
        await pilot.press("enter")
        assert text_of(pilot, "#password-message") == "the new passwords differ"

        await fill(pilot, "#old-password", "not my password")
        await fill(pilot, "#new-password", NEW_PASSWORD)
        await fill(pilot, "#repeat-password", NEW_PASSWORD)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "wrong" in text_of(pilot, "#password-message"))
        assert isinstance(app.screen, PasswordChangeScreen)

        await fill(pilot, "#old-password", PASSWORD)
        await fill(pilot, "#new-password", NEW_PASSWORD)
        await fill(pilot, "#repeat-password", NEW_PASSWORD)
        await pilot.press("enter")
        await dashboard_ready(pilot)
        assert not app.session.must_change_password
    assert "user.password_change" in actions_since(history, 0)


async def test_lockout_is_explained_on_the_login_screen(make_console, history: Appliance):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        for attempt in range(history.settings.lockout.max_failures):
            await log_in(pilot, ADMIN, f"wrong password {attempt}")
            await wait_for(pilot, lambda: not app.screen.busy)
        assert text_of(pilot, "#login-message").startswith(
            "too many failed attempts: locked until")
        assert "security officer" in text_of(pilot, "#login-hint")
        # Even the right password is refused now, with the same explanation.
        await log_in(pilot, ADMIN, PASSWORD)
        await wait_for(pilot, lambda: not app.screen.busy)
        assert isinstance(app.screen, LoginScreen) and app.session is None
        assert text_of(pilot, "#login-message").startswith("too many failed attempts")
    assert "auth.lockout" in actions_since(history, 0)


async def test_idle_session_returns_to_login_and_says_why(make_console, history: Appliance,
                                                          clock):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        await fill(pilot, "#export-out", "/half/typed/destination")
        start = read_head(history.conn).seq
        clock.advance(minutes=history.settings.session.idle_minutes + 1)
        app._check_idle()  # what the console's timer does every 30 s
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        notice = text_of(pilot, "#login-message")
        assert notice.startswith("session expired after 15 idle minutes")
        assert "the open dialog was closed without acting" in notice
        assert app.session is None and len(app.screen_stack) == 2
    assert actions_since(history, start) == ["auth.session_expired"]


async def test_an_action_after_idle_time_is_refused_and_explained(make_console, clock,
                                                                  history: Appliance):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, ADMIN, PASSWORD)
        start = read_head(history.conn).seq
        clock.advance(minutes=16)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert text_of(pilot, "#login-message") == (
            "session expired after 15 idle minutes; the verify did not run: log in again")
    assert actions_since(history, start) == ["auth.session_expired"]


async def test_an_account_disabled_while_its_console_is_open_returns_to_login(
        make_console, history: Appliance, admin_session: Session):
    """11.10(d): the open console of a disabled account acts no more; it says why."""
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in_to_audit(pilot, AUDITOR, PASSWORD)
        users.disable_user(history, admin_session, AUDITOR, "left the hospital")
        start = read_head(history.conn).seq
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert text_of(pilot, "#login-message") == (
            "session ended: the account is disabled; the verify did not run: log in again")
        assert app.session is None
    assert actions_since(history, start) == ["auth.session_ended"]


async def test_the_dashboard_shows_the_roles_the_account_holds_now(
        make_console, history: Appliance, admin_session: Session):
    """A role granted while the console is open counts at its next action (the roles are
    read from the stored account); the dashboard's Roles line says so at its next refresh,
    instead of the roles the account had at login."""
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, AUDITOR, PASSWORD)
        await dashboard_ready(pilot)
        assert text_of(pilot, "#dash-roles") == "auditor"
        users.grant_role(history, admin_session, AUDITOR, "ml", "runs the evaluations too")
        await pilot.press("r")
        await wait_for(pilot, lambda: text_of(pilot, "#dash-roles") == "auditor, ml",
                       what="the roles line after the grant")


async def test_updates_screen_after_idle_time_returns_to_login(make_console, clock,
                                                              history: Appliance):
    """A SessionExpired inside the updates screen is the session ending, not an error line."""
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, UpdatesScreen)
                       and "active:" in text_of(pilot, "#upd-message"), what="updates")
        start = read_head(history.conn).seq
        clock.advance(minutes=16)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert text_of(pilot, "#login-message") == (
            "session expired after 15 idle minutes; nothing was changed: log in again")
        assert app.session is None and len(app.screen_stack) == 2
    assert actions_since(history, start) == ["auth.session_expired"]


async def test_logout_is_recorded(make_console, history: Appliance):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        assert isinstance(app.screen, DashboardScreen)
        start = read_head(history.conn).seq
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert text_of(pilot, "#login-message") == "alice logged out"
    assert actions_since(history, start) == ["auth.logout"]


async def test_an_open_console_seals_events_left_past_the_checkpoint_minutes(
        make_console, history: Appliance, clock, monkeypatch: pytest.MonkeyPatch):
    """Nobody acts, nobody is logged in: the console's timer signs a checkpoint over the
    events the time policy says are overdue, and nothing else (no event, no record)."""
    import tui.app
    from appliance.audit.checkpoint import all_checkpoints

    def sealed() -> list[int]:
        return [cp.tree_size for cp in all_checkpoints(history.conn)]

    head, before = read_head(history.conn).seq, sealed()
    assert before[-1] < head and tui.app.SEAL_CHECK_SECONDS <= 60
    app = make_console()
    async with app.run_test(size=(80, 24)):
        app.seal_overdue()  # what the timer runs
        await app.workers.wait_for_complete()
        assert sealed() == before  # not due yet
    clock.advance(minutes=6)
    monkeypatch.setattr(tui.app, "SEAL_CHECK_SECONDS", 0.05)  # the timer, not a direct call
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: sealed() != before, what="the overdue checkpoint")
        assert isinstance(app.screen, LoginScreen)
    assert sealed() == [*before, head]
    assert read_head(history.conn).seq == head


async def test_a_tampered_checkpoint_time_neither_stops_logins_nor_the_seal(
        make_console, history: Appliance, clock, monkeypatch: pytest.MonkeyPatch):
    """The newest checkpoint's time edited into something unreadable: a checkpoint is then
    due at once. Logging in still works, the console's timer signs a fresh checkpoint, and
    verify still names the edited one."""
    import sqlite3

    import tui.app
    from appliance.audit.checkpoint import all_checkpoints
    from appliance.audit.verify import verify_trail
    raw = sqlite3.connect(history.layout.db, isolation_level=None)
    triggers = raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND "
                           "tbl_name = 'audit_checkpoints'").fetchall()
    for name, _ in triggers:
        raw.execute(f"DROP TRIGGER {name}")
    raw.execute("UPDATE audit_checkpoints SET body = json_set(body, '$.ts', 'not a time') "
                "WHERE id = (SELECT max(id) FROM audit_checkpoints)")
    for _, sql in triggers:
        raw.execute(sql)
    raw.close()
    count = len(all_checkpoints(history.conn))
    monkeypatch.setattr(tui.app, "SEAL_CHECK_SECONDS", 0.02)
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(all_checkpoints(history.conn)) > count,
                       what="a fresh checkpoint")
        await log_in(pilot, ADMIN, PASSWORD)
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
    assert "checkpoint-signature" in verify_trail(history.conn, history.key.public).kinds()


async def test_a_seal_that_fails_leaves_the_console_running(
        make_console, history: Appliance, monkeypatch: pytest.MonkeyPatch):
    """Whatever the timer's seal meets is housekeeping's problem: the worker's error is
    kept from the app, which stays up at its screen."""
    import tui.app
    from appliance.services import audit as audit_service

    def broken(_app):
        raise ValueError("something nobody expected")

    monkeypatch.setattr(audit_service, "seal_overdue", broken)
    monkeypatch.setattr(tui.app, "SEAL_CHECK_SECONDS", 0.02)
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(3):
            await pilot.pause(0.1)
            await app.workers.wait_for_complete()
        assert app.is_running and isinstance(app.screen, LoginScreen)
        await log_in(pilot, ADMIN, PASSWORD)
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
