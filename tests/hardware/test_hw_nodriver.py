"""The real NVML path on a host with no NVIDIA driver (this CI machine, a laptop)."""

from __future__ import annotations

import pynvml

from appliance.hardware import NO_DRIVER, NvmlSource, read_inventory


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_no_driver_reads_plainly_without_raising():
    assert not _driver_present(), "this test runs on the driverless CI host"
    inventory = read_inventory()
    assert inventory.driver_found is False
    assert inventory.summary() == NO_DRIVER == "no NVIDIA driver found"
    assert inventory.gpus == ()
    assert inventory.error  # NVML's own words are kept for the record
    assert inventory.describe_gpus() == "no NVIDIA driver"


def test_no_driver_reading_is_json_and_repeatable():
    first = NvmlSource().read().to_dict()
    second = read_inventory(NvmlSource()).to_dict()
    assert first == second
    assert first["summary"] == "no NVIDIA driver found"
    assert first["format"] == "appliance.gpu-reading/1"
