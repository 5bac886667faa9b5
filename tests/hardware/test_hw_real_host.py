"""The real NVML path on this host, whatever it has.

A driverless host (CI, a laptop) reads as "no NVIDIA driver found" and nothing raises; a host
with a driver reads what nvidia-smi reads (see `host.py`).
"""

from __future__ import annotations

from appliance.hardware import NO_DRIVER, NvmlSource, read_inventory
from tests.hardware.host import assert_matches_smi, smi_csv


def test_real_reading_is_what_the_host_has():
    inventory = read_inventory()
    assert inventory.source == "nvml"
    if smi_csv() is not None:
        assert_matches_smi(inventory, smi_csv())
        return
    assert inventory.driver_found is False
    assert inventory.summary() == NO_DRIVER == "no NVIDIA driver found"
    assert inventory.gpus == ()
    assert inventory.error  # NVML's own words are kept for the record
    assert inventory.describe_gpus() == "no NVIDIA driver"


def test_real_reading_is_json_and_repeatable():
    first = NvmlSource().read().to_dict()
    second = read_inventory(NvmlSource()).to_dict()
    drifting = ("memory_free_bytes", "temperature_c", "utilization_gpu_pct",
                "utilization_memory_pct")
    for data in (first, second):
        for gpu in data["gpus"]:
            for key in drifting:
                gpu.pop(key)
    assert first == second
    assert first["format"] == "appliance.gpu-reading/1"
    if smi_csv() is None:
        assert first["summary"] == "no NVIDIA driver found"
