"""The demo appliance's login screen shows the demo logins `make demo` printed; a real one
never does."""

from __future__ import annotations

import pytest

from appliance.audit.trail import iter_events, read_head
from appliance.context import Appliance
from appliance.demo import DEMO_USERS, mark_demo
from tests.tui.pilot import text_of

pytestmark = pytest.mark.asyncio


async def test_login_shows_demo_logins_only_on_the_demo(make_console, history: Appliance):
    plain = make_console()
    async with plain.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not pilot.app.screen.query("#login-demo")
    mark_demo(history)
    event = next(iter_events(history.conn, read_head(history.conn).seq)).data
    assert (event["action"], event["details"]["users"]) == (
        "appliance.demo", [u.username for u in DEMO_USERS])
    assert "demo-pass" not in str(event)
    demo = make_console()
    async with demo.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        hint = text_of(pilot, "#login-demo")
    assert hint.startswith("Demo logins: admin / demo-pass-dana, itops / demo-pass-ira")
    assert all(f"{u.username} / {u.password}" in hint for u in DEMO_USERS)
