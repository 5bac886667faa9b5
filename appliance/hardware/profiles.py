"""Engine profiles and which one fits this host, in the manner of NVIDIA NIM.

A bundle may carry several engines, each built for a GPU architecture, a TensorRT-LLM version
and a parallelism. `select_profile` checks every one against the GPU inventory and keeps a
reason for each, so that the approver and the audit trail see why one was chosen and why the
others were not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from appliance.canonical import canonical_bytes
from appliance.errors import InvalidInput
from appliance.hardware.nvml import GpuInventory, replayed_note
from appliance.text import not_plain

KINDS = ("trtllm_engine", "vllm", "cpu")
GENERIC = "generic"  # any NVIDIA GPU
CPU = "cpu"  # runs without a GPU
# "Any GPU" as vLLM means it: compute capability 7.0 (Volta) or newer; a Pascal or older card
# would be chosen over the CPU fallback and then fail to serve.
GENERIC_MIN_CC = (7, 0)


@dataclass(frozen=True)
class EngineProfile:
    """What a publisher declares about one engine. Memory is GiB per GPU, as NVML counts it:
    an "80GB" H100 reports about 79.6 GiB, so declare what the engine needs, not the label."""

    id: str
    kind: str
    gpu_archs: tuple[str, ...]
    trtllm_version: str | None = None
    tp_size: int = 1
    pp_size: int = 1
    min_gpu_memory_gib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidInput("engine profile without an id", "give every profile an id")
        for what, value in (("id", self.id), ("gpu_archs", " ".join(self.gpu_archs)),
                            ("trtllm_version", self.trtllm_version)):
            problem = not_plain(value) if isinstance(value, str) else None
            if problem:
                # Printed in every reason and kept in hardware.fit: a newline forged a line
                # of `hw fit`, a lone surrogate was a traceback at the audit event.
                raise InvalidInput(f"engine profile {ascii(self.id)}: {what} {problem}",
                                   "correct the profile")
        if self.kind not in KINDS:
            raise InvalidInput(f"profile {self.id}: unknown kind {self.kind!r}",
                               f"use one of {', '.join(KINDS)}")
        if not self.gpu_archs:
            raise InvalidInput(f"profile {self.id}: no GPU architecture",
                               'list e.g. ["sm_90"], or ["generic"], or ["cpu"]')
        if self.tp_size < 1 or self.pp_size < 1:
            raise InvalidInput(f"profile {self.id}: tp and pp must be at least 1",
                               "correct the profile")
        if not math.isfinite(self.min_gpu_memory_gib) or self.min_gpu_memory_gib < 0:
            raise InvalidInput(f"profile {self.id}: min_gpu_memory_gib must be a finite "
                               "number of GiB, 0 or more", "correct the profile")
        if self.kind == "cpu" and (self.gpu_archs != (CPU,) or self.gpus_needed != 1):
            raise InvalidInput(f"profile {self.id}: a cpu profile takes no GPU or parallelism",
                               'declare gpu_archs ["cpu"] with tp 1 and pp 1')
        if self.kind != "cpu" and CPU in self.gpu_archs:
            raise InvalidInput(f"profile {self.id}: only kind cpu may declare arch cpu",
                               "correct the profile")
        if self.kind == "trtllm_engine" and not self.trtllm_version:
            raise InvalidInput(f"profile {self.id}: a TensorRT-LLM engine needs its version",
                               "declare trtllm_version")
        if self.kind == "trtllm_engine" and GENERIC in self.gpu_archs:
            # A TensorRT plan is compiled for one SM; "any GPU" would be a false promise.
            raise InvalidInput(f"profile {self.id}: a TensorRT-LLM engine is built for a "
                               "specific GPU architecture", 'declare e.g. ["sm_90"]')

    @property
    def gpus_needed(self) -> int:
        return self.tp_size * self.pp_size

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def is_generic(self) -> bool:
        return GENERIC in self.gpu_archs

    @property
    def label(self) -> str:
        """How reasons name the profile, e.g. "engine sm_90 tp2" or "vllm any GPU tp1"."""
        if self.is_cpu:
            return "cpu profile"
        prefix = "engine" if self.kind == "trtllm_engine" else self.kind
        archs = "any GPU" if self.is_generic else "/".join(self.gpu_archs)
        pp = f" pp{self.pp_size}" if self.pp_size > 1 else ""
        return f"{prefix} {archs} tp{self.tp_size}{pp}"

    def to_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "kind": self.kind, "gpu_archs": list(self.gpu_archs),
                "trtllm_version": self.trtllm_version, "tp_size": self.tp_size,
                "pp_size": self.pp_size, "min_gpu_memory_gib": self.min_gpu_memory_gib}
        if self.extra:
            data["extra"] = self.extra
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineProfile:
        if not isinstance(data, dict):
            raise InvalidInput("engine profile is not a JSON object", "see profile.json")
        unknown = set(data) - {"id", "kind", "gpu_archs", "trtllm_version", "tp_size",
                               "pp_size", "min_gpu_memory_gib", "extra"}
        if unknown:
            raise InvalidInput(f"engine profile {data.get('id')!r}: unknown keys "
                               f"{', '.join(sorted(unknown))}", "remove or correct them")
        try:
            archs = data["gpu_archs"]
            version, extra = data.get("trtllm_version"), dict(data.get("extra") or {})
            if version is not None and not isinstance(version, str):
                raise ValueError(f"trtllm_version is {version!r}, not a string")
            canonical_bytes(extra)  # kept in hardware.fit: 2**60 or NaN was a traceback there
            return cls(
                id=str(data["id"]), kind=str(data["kind"]),
                gpu_archs=(archs,) if isinstance(archs, str) else tuple(str(a) for a in archs),
                trtllm_version=version,
                tp_size=_whole(data, "tp_size"), pp_size=_whole(data, "pp_size"),
                min_gpu_memory_gib=float(data.get("min_gpu_memory_gib", 0.0)),
                extra=extra)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"engine profile {data.get('id')!r} is malformed ({exc})",
                               "profile.json needs id, kind and gpu_archs") from exc


def _whole(data: dict[str, Any], key: str) -> int:
    """A GPU count as written: int() would turn 2.5 into 2, true into 1, and raise
    OverflowError (a traceback) on Infinity."""
    value = data.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is {value!r}, not a whole number")
    return value


@dataclass(frozen=True)
class Candidate:
    """One profile's verdict. `check` names the test that decided it (or "fits")."""

    profile_id: str
    fits: bool
    reason: str
    check: str

    def to_dict(self) -> dict[str, Any]:
        return {"profile_id": self.profile_id, "fits": self.fits, "reason": self.reason,
                "check": self.check}


@dataclass(frozen=True)
class Selection:
    """The chosen profile (or none) with every candidate's reason; goes into the audit trail."""

    chosen: EngineProfile | None
    candidates: tuple[Candidate, ...]
    host: str
    note: str
    pinned: str | None = None
    fallback_to_cpu: bool = False
    # Where the reading came from: "nvml" (this host), or "recorded:<file>" when replayed,
    # whose "this host has ..." is another machine's, or no machine's.
    source: str = "nvml"

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    @property
    def fitting(self) -> list[str]:
        """The ids of the profiles that fit: what a refused pin should have named."""
        return [c.profile_id for c in self.candidates if c.fits]

    @property
    def replayed(self) -> str:
        """What follows the host in text: the replayed reading, or nothing for NVML's."""
        return replayed_note(self.source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.id if self.chosen else None,
            "chosen_profile": self.chosen.to_dict() if self.chosen else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "host": self.host, "note": self.note, "pinned": self.pinned,
            "fallback_to_cpu": self.fallback_to_cpu, "source": self.source,
        }


def _fmt_gib(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def check_profile(profile: EngineProfile, inventory: GpuInventory,
                  supported_trtllm: set[str] | None = None) -> Candidate:
    """Test one profile against the host, in the order an operator would fix things:
    driver, GPU count (tp x pp), architecture, MIG, TensorRT-LLM version, memory."""
    label, host = profile.label, inventory.describe_gpus()

    def no(check: str, reason: str) -> Candidate:
        return Candidate(profile.id, False, reason, check)

    if profile.is_cpu:
        gpu_note = "" if inventory.driver_found else "; no NVIDIA driver found"
        return Candidate(profile.id, True, f"cpu profile runs without a GPU{gpu_note}", "fits")
    if not inventory.driver_found:
        return no("driver", f"{label} needs an NVIDIA GPU, {inventory.summary()}")
    needed = profile.gpus_needed
    gpu_word = "GPU" if needed == 1 else "GPUs"
    if inventory.gpu_count < needed:
        return no("parallelism", f"{label} needs {needed} {gpu_word}, this host has {host}")
    # "sm_90a" (CUDA's arch-specific target, which the bundle format takes) runs on its own
    # SM only: an H100 or H200 is sm_90 to NVML, and that engine never fit them.
    eligible = [g for g in inventory.gpus
                if g.arch in profile.gpu_archs or f"{g.arch}a" in profile.gpu_archs
                or (profile.is_generic and g.compute_capability >= GENERIC_MIN_CC)]
    if len(eligible) < needed:
        archs = ("sm_{}{} or newer".format(*GENERIC_MIN_CC) if profile.is_generic
                 else "/".join(profile.gpu_archs))
        return no("arch", f"{label} needs {needed} {archs} {gpu_word}, this host has {host}")
    whole = [g for g in eligible if not g.mig_enabled]
    if len(whole) < needed:
        # A GPU in MIG mode runs CUDA only inside its instances: the whole card (its memory,
        # its NVLink peers) is not there for an engine or vLLM to use.
        mig = ", ".join(str(g.index) for g in eligible if g.mig_enabled)
        return no("mig", f"{label} needs {needed} whole {gpu_word} without MIG, this host has "
                  f"{host} with MIG enabled on GPU {mig}")
    eligible = whole
    if (profile.kind == "trtllm_engine" and supported_trtllm is not None
            and profile.trtllm_version not in supported_trtllm):
        runs = ", ".join(sorted(supported_trtllm)) or "no TensorRT-LLM"
        return no("trtllm_version", f"{label} was built with TensorRT-LLM "
                  f"{profile.trtllm_version}, this appliance runs {runs}")
    big_enough = [g for g in eligible if g.memory_total_gib >= profile.min_gpu_memory_gib]
    if len(big_enough) < needed:
        need, most, unit = (_fmt_gib(profile.min_gpu_memory_gib),
                            _fmt_gib(max(g.memory_total_gib for g in eligible)), "GiB")
        if need == most:
            # 40980 MiB on a 40 GiB card read "needs 40 GiB ... at most 40 GiB each": in
            # MiB, the need rounded up and the memory down, so the two always differ.
            need = str(math.ceil(profile.min_gpu_memory_gib * 1024))
            most = str(max(g.memory_total_bytes for g in eligible) >> 20)
            unit = "MiB"
        # With some GPUs big enough, "at most 140 GiB each" read as if the 100 GiB asked
        # were there: say how many have it instead.
        have = (f"with at most {most} {unit} each" if not big_enough else
                f"and only {len(big_enough)} of the GPUs it could use "
                f"{'has' if len(big_enough) == 1 else 'have'} that much")
        return no("memory", f"{label} needs {need} {unit} per GPU on {needed} {gpu_word}, "
                  f"this host has {host} {have}")
    return Candidate(profile.id, True, f"{label} fits {host}", "fits")


def _rank(profile: EngineProfile) -> tuple:
    """Sort key, best first: see `select_profile`."""
    specificity = 0 if profile.is_cpu else (1 if profile.is_generic else 2)
    return (-specificity, -profile.gpus_needed, -profile.tp_size, profile.id)


def select_profile(profiles: list[EngineProfile], inventory: GpuInventory,
                   pinned: str | None = None,
                   supported_trtllm: set[str] | None = None) -> Selection:
    """Pick the profile that fits this host, with a reason for every candidate.

    Among fitting profiles the order is: GPU-specific before generic (an engine built for
    this SM is faster than a portable one) before CPU; then more GPUs used (tp x pp: the host
    paid for them); then more tensor than pipeline parallelism at equal GPU count (lower
    latency within one node); then profile id, so the choice never depends on list order.
    CPU profiles fit anywhere but are chosen only when no GPU profile fits. An admin's pin
    overrides the order but not the checks: a pinned profile that does not fit is refused.
    `supported_trtllm` None means the runtime version is not known and not checked.
    """
    ids = [p.id for p in profiles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInput(f"duplicate profile ids: {', '.join(duplicates)}",
                           "give every engine profile its own id")
    host, source = inventory.summary(), inventory.source
    ordered = sorted(profiles, key=_rank)
    candidates = tuple(check_profile(p, inventory, supported_trtllm) for p in ordered)
    verdict = {c.profile_id: c for c in candidates}

    if pinned is not None:
        by_id = {p.id: p for p in profiles}
        if pinned not in by_id:
            raise InvalidInput(f"no profile {pinned!r} to pin",
                               f"choose one of {', '.join(sorted(by_id)) or '(none)'}")
        c = verdict[pinned]
        if c.fits:
            return Selection(by_id[pinned], candidates, host, f"pinned by admin: {c.reason}",
                             pinned=pinned, fallback_to_cpu=by_id[pinned].is_cpu, source=source)
        return Selection(None, candidates, host, f"pinned profile {pinned} does not fit: "
                         f"{c.reason}", pinned=pinned, source=source)

    fitting = [p for p in ordered if verdict[p.id].fits]
    if not profiles:
        return Selection(None, candidates, host, "no engine profiles to choose from",
                         source=source)
    if not fitting:
        if not inventory.driver_found:
            note = f"{host}, and there is no CPU-capable profile to fall back to"
        else:
            note = f"no profile fits this host ({inventory.describe_gpus()})"
        return Selection(None, candidates, host, note, source=source)
    best = fitting[0]
    if best.is_cpu:
        why = (f"{host}: falling back to CPU profile {best.id}" if not inventory.driver_found
               else f"no GPU profile fits this host: falling back to CPU profile {best.id}")
        return Selection(best, candidates, host, why, fallback_to_cpu=True, source=source)
    kind = "generic" if best.is_generic else "GPU-specific"
    others = len(fitting) - 1
    tail = f"; {others} other profile{'s' if others != 1 else ''} also fit" if others else ""
    return Selection(best, candidates, host,
                     f"chose {best.id}: {kind} {best.label} on {inventory.describe_gpus()}{tail}",
                     source=source)
