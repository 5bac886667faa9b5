"""Settings that would switch a control off are refused when config.json is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.settings import load_settings


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("value", [0, -1, True, "2", 1.5])
def test_an_approval_needing_no_administrator_is_refused(tmp_path: Path, value) -> None:
    path = _write(tmp_path / "config.json", {"approval": {"required_admin_signatures": value}})
    with pytest.raises(InvalidInput, match=r"^approval.required_admin_signatures is "):
        load_settings(path)


def test_one_or_more_administrators_load(tmp_path: Path) -> None:
    for n in (1, 3):
        path = _write(tmp_path / "config.json", {"approval": {"required_admin_signatures": n}})
        assert load_settings(path).approval.required_admin_signatures == n


def test_a_config_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="must hold a JSON object"):
        load_settings(_write(tmp_path / "config.json", [1, 2]))
