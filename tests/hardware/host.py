"""This test host's GPUs as nvidia-smi reports them: the witness the appliance's reader is held to.

The real NVML tests run on every host. A driverless one (CI, a laptop) must read as "no
NVIDIA driver found"; one with a driver (the appliance's own servers) must read what
nvidia-smi, the driver's own tool, reads. A reading recorded on a real machine keeps the
nvidia-smi CSV taken beside it, so the same comparison runs in CI.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import subprocess

from appliance.hardware import GpuInventory

QUERY = ("index", "name", "uuid", "memory.total", "driver_version", "compute_cap",
         "ecc.errors.uncorrected.volatile.total", "mig.mode.current")
_MIB = 1 << 20
_MIG = {"Enabled": True, "Disabled": False}


@functools.cache
def smi_csv() -> str | None:
    """`nvidia-smi --query-gpu` CSV for this host, or None where no driver answers."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    r = subprocess.run([exe, f"--query-gpu={','.join(QUERY)}", "--format=csv,nounits"],
                       capture_output=True, text=True, timeout=60)
    return r.stdout if r.returncode == 0 else None


def smi_rows(text: str) -> list[dict[str, str]]:
    """Rows keyed by query field; headers lose their unit ("memory.total [MiB]")."""
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    header = [name.split(" [")[0] for name in rows[0]]
    return [dict(zip(header, row, strict=True)) for row in rows[1:] if row]


def _optional_int(value: str) -> int | None:
    return None if value.startswith("[") else int(value)  # "[N/A]", "[Not Supported]"


def assert_matches_smi(inventory: GpuInventory, text: str) -> None:
    """Every field nvidia-smi and NVML both report, and that does not drift, agrees."""
    rows = smi_rows(text)
    assert inventory.driver_found and inventory.error is None, inventory.summary()
    assert len(inventory.gpus) == len(rows) > 0
    for gpu, row in zip(inventory.gpus, rows, strict=True):
        assert gpu.index == int(row["index"])
        assert (gpu.name, gpu.uuid) == (row["name"], row["uuid"])
        assert gpu.memory_total_bytes == int(row["memory.total"]) * _MIB
        assert gpu.arch == "sm_" + row["compute_cap"].replace(".", "")
        assert inventory.driver_version == row["driver_version"]
        assert gpu.ecc_volatile_uncorrected == _optional_int(
            row["ecc.errors.uncorrected.volatile.total"])
        assert gpu.mig_enabled == _MIG.get(row["mig.mode.current"])
