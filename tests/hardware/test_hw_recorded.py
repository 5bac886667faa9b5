"""Recorded readings (fixtures written from NVIDIA's published figures) replay exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.hardware import RecordedSource, read_inventory, write_reading

FIXTURES = Path(__file__).parent / "fixtures"

EXPECTED = {
    "h100-sxm-80gb-x8.json": (
        "8 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15", "8 H100 (sm_90)",
        "12.4"),
    "h200-141gb-x1.json": (
        "1 x NVIDIA H200 (sm_90, 140 GiB), driver 550.90.07", "1 H200 (sm_90)", "12.4"),
    "a100-sxm-80gb-x4.json": (
        "4 x NVIDIA A100-SXM4-80GB (sm_80, 80 GiB each), driver 535.161.08", "4 A100 (sm_80)",
        "12.2"),
    "a100-sxm-40gb-x1.json": (
        "1 x NVIDIA A100-SXM4-40GB (sm_80, 40 GiB), driver 535.161.08", "1 A100 (sm_80)",
        "12.2"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_replays(name: str):
    summary, host, cuda = EXPECTED[name]
    inventory = read_inventory(RecordedSource(FIXTURES / name))
    assert inventory.driver_found
    assert inventory.summary() == summary
    assert inventory.describe_gpus() == host
    assert inventory.cuda_driver_version == cuda
    assert [g.index for g in inventory.gpus] == list(range(inventory.gpu_count))
    assert len({g.uuid for g in inventory.gpus}) == inventory.gpu_count
    for gpu in inventory.gpus:
        assert gpu.memory_free_bytes < gpu.memory_total_bytes
        assert gpu.ecc_volatile_uncorrected == 0 and gpu.mig_enabled is False
    assert inventory.source == f"recorded:{name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_says_it_is_not_a_recording(name: str):
    data = json.loads((FIXTURES / name).read_text())
    assert data["note"].startswith("From NVIDIA's published figures, not a recorded reading.")
    assert data["summary"] == EXPECTED[name][0]  # the stored summary matches what we compute


def test_write_then_read_round_trips(tmp_path: Path):
    original = read_inventory(RecordedSource(FIXTURES / "a100-sxm-80gb-x4.json"))
    out = tmp_path / "reading.json"
    write_reading(original, out, note="copied")
    again = read_inventory(RecordedSource(out))
    assert again.gpus == original.gpus
    assert (again.driver_version, again.cuda_driver_version) == ("535.161.08", "12.2")
    assert again.note == "copied"


def test_no_driver_reading_round_trips(tmp_path: Path):
    out = tmp_path / "none.json"
    write_reading(read_inventory(), out)
    again = read_inventory(RecordedSource(out))
    assert not again.driver_found and again.summary() == "no NVIDIA driver found"


@pytest.mark.parametrize("content, message", [
    ("{not json", "unreadable"),
    ("[1, 2]", "not a JSON object"),
    ('{"format": "something-else"}', "not a GPU reading"),
    ('{"format": "appliance.gpu-reading/1", "driver_found": true, "gpus": [{"index": 0}]}',
     "malformed GPU reading"),
])
def test_bad_readings_are_refused_plainly(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        RecordedSource(path).read()


def test_missing_reading_is_refused(tmp_path: Path):
    with pytest.raises(InvalidInput, match="not found"):
        RecordedSource(tmp_path / "absent.json").read()
