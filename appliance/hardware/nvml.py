"""The host's NVIDIA GPUs as the appliance sees them: NVML is read here and nowhere else.

`GpuSource` is the one interface at the hardware edge. `NvmlSource` reads the real driver
through nvidia-ml-py; `RecordedSource` replays a reading saved as JSON (fixtures, demos, and
readings taken from real machines with `appliance hw record`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import InvalidInput
from appliance.text import not_plain

READING_FORMAT = "appliance.gpu-reading/1"
MAX_READING = 1 << 20       # bytes; a reading of 8 GPUs is under 8 KiB
NO_DRIVER = "no NVIDIA driver found"
_GIB = 1024 ** 3


@dataclass(frozen=True)
class Gpu:
    """One GPU. Fields NVML may not support on a device (ECC, MIG, sensors) are None."""

    index: int
    name: str
    uuid: str
    compute_capability: tuple[int, int]
    memory_total_bytes: int
    memory_free_bytes: int
    temperature_c: int | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    ecc_volatile_uncorrected: int | None = None
    mig_enabled: bool | None = None

    @property
    def arch(self) -> str:
        """CUDA architecture as engines name it: compute capability 9.0 -> "sm_90"."""
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total_bytes / _GIB

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "gpu") -> Gpu:
        """Check every field's type: a reading is a file from elsewhere, and a wrong type
        would otherwise surface later as a TypeError in whatever first used it."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is {_shown(data)}, not an object")
        unknown = sorted(set(data) - {"compute_capability", *_GPU_FIELDS})
        if unknown:
            raise ValueError(f"{where} has unknown fields {unknown}")
        cc = data.get("compute_capability")
        if not (isinstance(cc, list) and len(cc) == 2 and all(_is_count(v) for v in cc)):
            raise ValueError(f"{where}.compute_capability is {_shown(cc)}, not two integers")
        if cc[0] > 99 or cc[1] > 9:
            # "sm_{major}{minor}" is only unambiguous for one-digit minors: 1.10 would read sm_110
            raise ValueError(f"{where}.compute_capability is {_shown(cc)}, not a real one")
        values = {name: _typed(f"{where}.{name}", data, name, kind, optional)
                  for name, (kind, optional) in _GPU_FIELDS.items()}
        for name, most in _GPU_LIMITS.items():
            if values[name] is not None and values[name] > most:
                raise ValueError(f"{where}.{name} is {_shown(values[name])}, more than {most}")
        if values["memory_free_bytes"] > values["memory_total_bytes"]:
            raise ValueError(f"{where}.memory_free_bytes is more than its memory_total_bytes")
        return cls(compute_capability=(cc[0], cc[1]), **values)


# Each reading field: its type, and whether NVML may leave it unknown (None).
_GPU_FIELDS: dict[str, tuple[type, bool]] = {
    "index": (int, False), "name": (str, False), "uuid": (str, False),
    "memory_total_bytes": (int, False), "memory_free_bytes": (int, False),
    "temperature_c": (int, True), "utilization_gpu_pct": (int, True),
    "utilization_memory_pct": (int, True), "ecc_volatile_uncorrected": (int, True),
    "mig_enabled": (bool, True),
}
# Bounds no real GPU comes near: a larger memory would overflow the float GiB used in every
# summary and fit (a traceback), a larger percentage is not one, an index past 2**53 was a
# traceback where the fit records it (canonical JSON's integers end at 2**53 - 1).
_GPU_LIMITS = {"memory_total_bytes": 1 << 50, "memory_free_bytes": 1 << 50,
               "utilization_gpu_pct": 100, "utilization_memory_pct": 100,
               "index": 65535, "temperature_c": 1000, "ecc_volatile_uncorrected": (1 << 53) - 1}
_KIND_NAMES = {int: "a non-negative integer", str: "a string", bool: "true or false"}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _typed(where: str, data: dict[str, Any], name: str, kind: type, optional: bool) -> Any:
    if name not in data:
        if optional:
            return None
        raise ValueError(f"{where} is missing")
    value = data[name]
    if value is None and optional:
        return None
    ok = _is_count(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise ValueError(f"{where} is {_shown(value)}, not {_KIND_NAMES[kind]}"
                         + (" or null" if optional else ""))
    problem = not_plain(value) if kind is str else None
    if problem:
        # A name is printed in `hw show` and kept in audit events: a newline there forged a
        # line, and a lone surrogate ("\\ud800") was a traceback wherever it was printed.
        raise ValueError(f"{where} {problem}")
    return value


def replayed_note(source: str) -> str:
    """What follows a host's description in text: where a replayed reading came from, or
    nothing for NVML's own answer (another machine's GPUs must never read as this host's)."""
    return "" if source == "nvml" else f" (replayed reading: {source})"


@dataclass(frozen=True)
class GpuInventory:
    """What NVML said about this host. `driver_found` False means nothing else is known."""

    driver_found: bool
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    error: str | None = None
    source: str = "nvml"
    note: str | None = None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def describe_gpus(self) -> str:
        """Short host description for reasons, e.g. "1 A100 (sm_80)" or "no GPU"."""
        if not self.driver_found:
            return "no NVIDIA driver"
        if not self.gpus:
            # With an error the GPUs are there but unreadable (fallen off the bus): not "no GPU".
            return "no GPU NVML could read" if self.error else "no GPU"
        groups = Counter((_short_name(g.name), g.arch) for g in self.gpus)
        return " + ".join(f"{n} {name} ({arch})" for (name, arch), n in groups.items())

    def summary(self) -> str:
        """One line for people.

        e.g. "2 x NVIDIA H100 80GB HBM3 (sm_90, 80 GiB each), driver 550.54.15".
        """
        if not self.driver_found:
            return NO_DRIVER
        if not self.gpus and self.error:
            return f"NVIDIA driver found but NVML could not read the GPUs: {self.error}"
        if not self.gpus:
            return f"no GPUs visible, {self._driver()}"
        groups = Counter((g.name, g.arch, round(g.memory_total_gib)) for g in self.gpus)
        parts = []
        for (name, arch, gib), n in groups.items():
            each = " each" if n > 1 else ""
            parts.append(f"{n} x {name} ({arch}, {gib} GiB{each})")
        return f"{' + '.join(parts)}, {self._driver()}"

    def _driver(self) -> str:
        # A reading may leave the version out (null): it read "driver None".
        return f"driver {self.driver_version}" if self.driver_version else \
            "driver version unknown"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": READING_FORMAT,
            "driver_found": self.driver_found,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "gpus": [g.to_dict() for g in self.gpus],
            "error": self.error,
            "source": self.source,
            "summary": self.summary(),
        }
        if self.note:
            data["note"] = self.note
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recorded") -> GpuInventory:
        if data.get("format") != READING_FORMAT:
            raise InvalidInput(
                f"not a GPU reading (format {data.get('format')!r})",
                f"expected format {READING_FORMAT!r}, written by `appliance hw record`")
        try:
            text = {name: _typed(name, data, name, str, True)
                    for name in ("driver_version", "cuda_driver_version", "error", "note")}
            gpus = data.get("gpus", [])
            if not isinstance(gpus, list):
                raise ValueError(f"gpus is {_shown(gpus)}, not a list")
            parsed = tuple(Gpu.from_dict(g, f"gpus[{i}]") for i, g in enumerate(gpus))
            for key in ("index", "uuid"):
                seen = Counter(getattr(g, key) for g in parsed)
                twice = sorted(str(v) for v, n in seen.items() if n > 1)
                if twice:
                    # one GPU listed twice would count as two for tp x pp
                    raise ValueError(f"gpus list {key} {_shown(twice[0])} more than once")
            driver_found = _typed("driver_found", data, "driver_found", bool, False)
            if parsed and not driver_found:
                # Shown as "no NVIDIA driver found" while --json listed the GPUs anyway.
                raise ValueError("gpus are listed but driver_found is false")
            return cls(driver_found=driver_found, gpus=parsed, source=source, **text)
        except ValueError as exc:
            raise InvalidInput(f"malformed GPU reading ({exc})",
                               "record it again with `appliance hw record`") from exc


def _short_name(name: str) -> str:
    """ "NVIDIA A100-SXM4-80GB" -> "A100": the family is what people recognise in a reason.
    Older data-centre cards carry a brand instead: "Tesla V100-SXM2-32GB" -> "V100"."""
    words = [w for w in name.split() if w not in ("NVIDIA", "Tesla")]
    return words[0].split("-")[0] if words else name


class GpuSource(Protocol):
    """The one interface between the appliance and the GPU driver."""

    def read(self) -> GpuInventory: ...


class NvmlSource:
    """Reads the host through NVML (nvidia-ml-py). Never raises for a missing driver."""

    def read(self) -> GpuInventory:
        import pynvml  # lazy: the module loads libnvidia-ml only on nvmlInit, but stay cheap

        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as exc:
            # Library not found, driver not loaded, no permission: all mean "no usable driver".
            return GpuInventory(driver_found=False, error=str(exc))
        try:
            return self._read_initialised(pynvml)
        except pynvml.NVMLError as exc:
            # A driver that answers init but fails a query (GPU fallen off the bus, Xid):
            # report it rather than crash the console; no GPU is offered for selection.
            return GpuInventory(driver_found=True, error=str(exc))
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass  # nothing useful to do if shutdown fails; the reading is already taken

    def _read_initialised(self, nv) -> GpuInventory:
        driver = _text(nv.nvmlSystemGetDriverVersion())
        cuda = _optional(nv, nv.nvmlSystemGetCudaDriverVersion)
        gpus = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            util = _optional(nv, nv.nvmlDeviceGetUtilizationRates, handle)
            mig = _optional(nv, nv.nvmlDeviceGetMigMode, handle)
            gpus.append(Gpu(
                index=index,
                name=_text(nv.nvmlDeviceGetName(handle)),
                uuid=_text(nv.nvmlDeviceGetUUID(handle)),
                compute_capability=tuple(nv.nvmlDeviceGetCudaComputeCapability(handle)),
                memory_total_bytes=int(memory.total),
                memory_free_bytes=int(memory.free),
                temperature_c=_optional(nv, nv.nvmlDeviceGetTemperature, handle,
                                        nv.NVML_TEMPERATURE_GPU),
                utilization_gpu_pct=None if util is None else int(util.gpu),
                utilization_memory_pct=None if util is None else int(util.memory),
                ecc_volatile_uncorrected=_optional(
                    nv, nv.nvmlDeviceGetTotalEccErrors, handle,
                    nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC),
                mig_enabled=None if mig is None else mig[0] == nv.NVML_DEVICE_MIG_ENABLE,
            ))
        return GpuInventory(
            driver_found=True, driver_version=driver,
            cuda_driver_version=None if cuda is None else _cuda_version(cuda),
            gpus=tuple(gpus))


def _optional(nv, fn, *args):
    """Call an NVML query whose absence is normal: a device without it (consumer cards,
    older GPUs), a driver older than the call (its library lacks the function), or a query
    this account may not make. Such a field reads as unknown; the reading goes on."""
    try:
        return fn(*args)
    except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound,
            nv.NVMLError_NoPermission):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(value: int) -> str:
    """NVML packs the CUDA driver version as 1000*major + 10*minor: 12040 -> "12.4"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


class RecordedSource:
    """Replays a reading saved as JSON: the only test double, at the hardware edge."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> GpuInventory:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_READING + 1)
            if len(raw) > MAX_READING:
                raise InvalidInput(f"GPU reading {self.path} is larger than {MAX_READING} "
                                   "bytes", "pass a file written by `appliance hw record`")
            data = json.loads(raw.decode("utf-8"))
        except FileNotFoundError as exc:
            raise InvalidInput(f"GPU reading {self.path} not found",
                               "pass a file written by `appliance hw record`") from exc
        except (OSError, ValueError, RecursionError) as exc:
            # ValueError: not JSON, or not even UTF-8; RecursionError: nested too deeply
            raise InvalidInput(f"GPU reading {self.path} is unreadable ({exc})",
                               "pass a file written by `appliance hw record`") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"GPU reading {self.path} is not a JSON object",
                               "pass a file written by `appliance hw record`")
        return GpuInventory.from_dict(data, source=f"recorded:{self.path.name}")


class TakenReading:
    """A reading already taken, handed on as a source: an action reads the GPUs first, so
    that a reading that cannot be read refuses it before anything changes, and uses that
    reading later without asking NVML again."""

    def __init__(self, inventory: GpuInventory) -> None:
        self.inventory = inventory

    def read(self) -> GpuInventory:
        return self.inventory


def reading_bytes(inventory: GpuInventory, note: str | None = None) -> bytes:
    """A reading as `write_reading` saves it and `RecordedSource` reads it back."""
    data = inventory.to_dict()
    data.pop("source", None)
    if note:
        data["note"] = note
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_reading(inventory: GpuInventory, path: Path, note: str | None = None) -> None:
    """Save a reading so that a real machine's inventory can become a fixture later."""
    Path(path).write_bytes(reading_bytes(inventory, note))
