"""Failed password checks from many terminals at once: the lockout still stops at its limit.

Each attempt runs in its own thread on its own connection to the same database file. The
test holds SQLite's write lock while they start, and lets go only once every one of them
waits for it (seen by the statement it is blocked on), so all of them have run whatever
they do before their first write: the interleaving an attacker gets from a burst of
simultaneous logins.
"""

from __future__ import annotations

import threading

import pytest

from appliance.context import Appliance
from appliance.errors import ApplianceError
from appliance.services import auth, users
from tests.conftest import PASSWORD
from tests.lockgate import WriteLockGate


def _burst(home, clock, attempt, n: int) -> list[BaseException | None]:
    """Run `attempt(app)` in n threads, each on its own Appliance, released together."""
    apps = [Appliance.open(home, clock=clock, terminal=f"tty{i}") for i in range(n)]
    outcome: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        try:
            attempt(apps[i])
        except ApplianceError as exc:
            outcome[i] = exc

    gate = WriteLockGate(home)
    with gate:
        for app in apps:
            gate.watch(app.conn)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        gate.wait_blocked()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for app in apps:
        app.close()
    return outcome


def _reasons(app: Appliance, action: str) -> list[str]:
    return [r[0] for r in app.conn.execute(
        "SELECT json_extract(body, '$.details.reason') FROM audit_view "
        "WHERE action = ? AND outcome = 'failure' ORDER BY seq", (action,))]


def test_simultaneous_wrong_logins_check_no_more_passwords_than_the_limit(
        appliance, make_user) -> None:
    make_user(["it"], username="ivy")
    limit = appliance.settings.lockout.max_failures
    out = _burst(appliance.layout.root, appliance.clock,
                 lambda app: auth.login(app, "ivy", "wrong password!!"), limit + 3)
    assert all(isinstance(e, ApplianceError) for e in out)
    reasons = _reasons(appliance, "auth.login")
    # Only `limit` passwords were tried; every later attempt found the account locked.
    assert reasons.count("bad credentials or inactive account") == limit
    assert reasons.count("account locked") == 3
    assert auth.locked_until(appliance, "ivy", appliance.clock.now()) is not None
    with pytest.raises(ApplianceError, match="locked until"):
        auth.login(appliance, "ivy", PASSWORD)


def test_simultaneous_wrong_old_passwords_check_no_more_than_the_limit(
        appliance, make_user) -> None:
    session = make_user(["it"], username="ida")
    limit = appliance.settings.lockout.max_failures
    out = _burst(appliance.layout.root, appliance.clock,
                 lambda app: users.change_password(app, session, "wrong password!!",
                                                   "a brand new passphrase"), limit + 3)
    assert all(isinstance(e, ApplianceError) for e in out)
    reasons = _reasons(appliance, "user.password_change")
    assert reasons.count("wrong old password") == limit
    assert reasons.count("account locked") == 3

