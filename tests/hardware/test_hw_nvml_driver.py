"""NvmlSource with a driver present, through a stand-in for the pynvml module (the hardware edge).

CI has no GPU, so the driver's answers, including the failures a real card rarely gives on
demand (a query not supported, a GPU fallen off the bus), come from a stand-in with the same
function names and error classes as nvidia-ml-py (checked below against the installed module):
a renamed or misspelt NVML call fails here. The real driver path ran on H100 and H200
machines; their readings are fixtures (`*-recorded.json`, see test_hw_recorded.py).
"""

from __future__ import annotations

import sys
import types
from collections import namedtuple

import pynvml
import pytest

from appliance.hardware import NvmlSource

Memory = namedtuple("Memory", "total free used")
Util = namedtuple("Util", "gpu memory")
CALLS = ("nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion",
         "nvmlSystemGetCudaDriverVersion", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
         "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetCudaComputeCapability",
         "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates",
         "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetMigMode")
OPTIONAL_ERRORS = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound",
                   "NVMLError_NoPermission")
CONSTANTS = ("NVML_TEMPERATURE_GPU", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_VOLATILE_ECC",
             "NVML_DEVICE_MIG_ENABLE")


def stand_in(devices: list[dict], fail_on: str | None = None) -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    nv.NVMLError = pynvml.NVMLError
    for name in OPTIONAL_ERRORS:
        setattr(nv, name, getattr(pynvml, name))
    for name in CONSTANTS:
        setattr(nv, name, getattr(pynvml, name))
    nv.shutdowns = 0

    def dev(h, key):
        value = devices[h][key]
        if value is NotImplemented:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if isinstance(value, Refused):
            raise pynvml.NVMLError(value.code)
        if fail_on == key:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return value

    def shutdown():
        nv.shutdowns += 1

    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = shutdown
    nv.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    nv.nvmlSystemGetCudaDriverVersion = lambda: dev(0, "cuda") if devices and \
        "cuda" in devices[0] else 12040
    nv.nvmlDeviceGetCount = lambda: len(devices)
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetName = lambda h: dev(h, "name")
    nv.nvmlDeviceGetUUID = lambda h: dev(h, "uuid")
    nv.nvmlDeviceGetCudaComputeCapability = lambda h: dev(h, "cc")
    nv.nvmlDeviceGetMemoryInfo = lambda h: dev(h, "mem")
    nv.nvmlDeviceGetTemperature = lambda h, sensor: dev(h, "temp")
    nv.nvmlDeviceGetUtilizationRates = lambda h: dev(h, "util")
    nv.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: dev(h, "ecc")
    nv.nvmlDeviceGetMigMode = lambda h: dev(h, "mig")
    return nv


H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "cc": (9, 0),
        "mem": Memory(85520809984, 85000000000, 520809984), "temp": 35, "util": Util(3, 1),
        "ecc": 0, "mig": [0, 0]}
CONSUMER = {"name": b"NVIDIA GeForce RTX 4090", "uuid": b"GPU-2", "cc": (8, 9),
            "mem": Memory(25757220864, 25000000000, 757220864), "temp": NotImplemented,
            "util": NotImplemented, "ecc": NotImplemented, "mig": NotImplemented}


class Refused(int):
    """A stand-in answer: the query fails with this NVML error code."""

    @property
    def code(self) -> int:
        return int(self)


def test_stand_in_uses_only_real_nvml_names():
    missing = [n for n in CALLS + CONSTANTS + OPTIONAL_ERRORS if not hasattr(pynvml, n)]
    assert missing == []
    assert all(issubclass(getattr(pynvml, n), pynvml.NVMLError) for n in OPTIONAL_ERRORS)


def test_a_driver_older_than_a_query_or_a_query_not_permitted_reads_as_unknown(
        monkeypatch: pytest.MonkeyPatch):
    """An older driver's library lacks nvmlSystemGetCudaDriverVersion, and reading ECC
    counters may need root: the whole reading used to fail ("NVML could not read the
    GPUs", no GPU offered) where only those fields are unknown."""
    old = dict(H100, cuda=Refused(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),
               ecc=Refused(pynvml.NVML_ERROR_NO_PERMISSION))
    monkeypatch.setitem(sys.modules, "pynvml", stand_in([old]))
    inv = NvmlSource().read()
    [gpu] = inv.gpus
    assert inv.cuda_driver_version is None and gpu.ecc_volatile_uncorrected is None
    assert gpu.arch == "sm_90" and gpu.temperature_c == 35


def test_reads_every_field_and_shuts_down(monkeypatch: pytest.MonkeyPatch):
    nv = stand_in([H100, dict(H100, uuid="GPU-3", mig=[1, 1], ecc=2)])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    inv = NvmlSource().read()
    assert inv.summary() == "2 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15"
    assert inv.cuda_driver_version == "12.4"
    first, second = inv.gpus
    assert (first.uuid, first.temperature_c, first.utilization_gpu_pct) == ("GPU-1", 35, 3)
    assert (first.mig_enabled, second.mig_enabled) == (False, True)
    assert second.ecc_volatile_uncorrected == 2
    assert nv.shutdowns == 1


def test_not_supported_fields_become_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", stand_in([CONSUMER]))
    [gpu] = NvmlSource().read().gpus
    assert (gpu.name, gpu.uuid, gpu.arch) == ("NVIDIA GeForce RTX 4090", "GPU-2", "sm_89")
    assert (gpu.temperature_c, gpu.utilization_gpu_pct, gpu.ecc_volatile_uncorrected,
            gpu.mig_enabled) == (None, None, None, None)


def test_a_failing_query_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch):
    nv = stand_in([H100], fail_on="mem")
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    inv = NvmlSource().read()
    assert inv.driver_found and inv.gpus == ()
    assert inv.summary().startswith("NVIDIA driver found but NVML could not read the GPUs: ")
    assert nv.shutdowns == 1
