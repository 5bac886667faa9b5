"""Provisioning fixtures: an IT user, a wheelhouse built here, scratch appliance roots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.identity.session import Session
from tests.provision.kit import build_wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wh = tmp_path_factory.mktemp("wheelhouse")
    build_wheel(wh)
    return wh


@pytest.fixture
def it_session(make_user: Callable[..., Session]) -> Session:
    return make_user(["it"], username="ivan", full_name="Ivan Ito")
