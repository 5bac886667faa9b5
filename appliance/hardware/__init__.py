"""Hardware fit: what GPUs this host has (NVML) and which engine profile fits them."""

from __future__ import annotations

from appliance.hardware.nvml import (
    NO_DRIVER,
    Gpu,
    GpuInventory,
    GpuSource,
    NvmlSource,
    RecordedSource,
    TakenReading,
    reading_bytes,
    replayed_note,
    write_reading,
)


def read_inventory(source: GpuSource | None = None) -> GpuInventory:
    """The host's GPUs; with no NVIDIA driver the inventory says so and nothing raises."""
    return (source or NvmlSource()).read()


__all__ = ["NO_DRIVER", "Gpu", "GpuInventory", "GpuSource", "NvmlSource", "RecordedSource",
           "TakenReading", "read_inventory", "reading_bytes", "replayed_note", "write_reading"]
