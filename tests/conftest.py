"""Shared fixtures: real appliances in temporary homes, real users, real sessions."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.clock import Clock
from appliance.context import Appliance
from appliance.identity.roles import TRAINING_REQUIRED
from appliance.identity.session import Session
from appliance.services import auth, users
from appliance.services.setup import init_appliance
from appliance.settings import PasswordPolicy, Settings

ADMIN = "alice"
ADMIN_NAME = "Alice Adams"
PASSWORD = "correct horse battery"

# Cheap scrypt in tests only; the policy default is memory-hard. Password expiry is off
# here because CLI subprocesses run on the real clock while fixtures use a fixed one;
# the expiry tests turn it on.
FAST = Settings(password=PasswordPolicy(scrypt_n=2**10, max_age_days=0))


class SteppingClock(Clock):
    """Deterministic time: starts at a fixed instant and advances 1 ms per reading."""

    def __init__(self, start: datetime = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)) -> None:
        self.t = start
        self.step = timedelta(milliseconds=1)
        super().__init__(now=self._now)

    def _now(self) -> datetime:
        self.t += self.step
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real home or an inherited appliance home."""
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("APPLIANCE_HOME", raising=False)


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "appliance-home"


@pytest.fixture
def appliance(home: Path, clock: SteppingClock) -> Appliance:
    app = init_appliance(home, ADMIN, ADMIN_NAME, PASSWORD, clock=clock, settings=FAST,
                         terminal="test-terminal")
    yield app
    app.close()


@pytest.fixture
def admin_session(appliance: Appliance) -> Session:
    return auth.login(appliance, ADMIN, PASSWORD)


_counter = itertools.count()


@pytest.fixture
def make_user(appliance: Appliance, admin_session: Session) -> Callable[..., Session]:
    """Create a user with the given roles and return a logged-in session for them."""

    def make(roles: list[str], username: str | None = None,
             full_name: str | None = None) -> Session:
        name = username or f"{roles[0]}user{next(_counter)}"
        trained = [r for r in roles if r in TRAINING_REQUIRED]
        first = [r for r in roles if r not in TRAINING_REQUIRED] or ["auditor"]
        users.add_user(appliance, admin_session, name, full_name or name.title(), first,
                       PASSWORD, "test account", must_change_password=False)
        for role in trained:  # 11.10(i): training is recorded before the role is granted
            users.record_training(appliance, admin_session, name, role, "course completed")
            users.grant_role(appliance, admin_session, name, role, "trained")
        if first == ["auditor"] and "auditor" not in roles:
            users.revoke_role(appliance, admin_session, name, "auditor", "placeholder role")
        return auth.login(appliance, name, PASSWORD)

    return make


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["APPLIANCE_HOME"] = str(home)
    return env
