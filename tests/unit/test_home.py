"""Where the appliance home is when --home is not given (issue: foundation)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from appliance import home


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "h"))
    monkeypatch.setattr(home.os, "geteuid", lambda: 0)
    assert home.default_home() == tmp_path / "h"


def test_root_uses_var_lib_appliance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLIANCE_HOME", raising=False)
    monkeypatch.setattr(home.os, "geteuid", lambda: 0)
    assert home.default_home() == Path("/var/lib/appliance")


def test_anyone_else_uses_their_data_directory(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.delenv("APPLIANCE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(home.os, "geteuid", lambda: 1000)
    assert home.default_home() == tmp_path / "data" / "appliance"
    assert home.default_home() == Path(platformdirs.user_data_dir("appliance", appauthor=False))
