"""Engine profiles from a bundle's components, and the serving configuration for the chosen one.

This replaces `hardware.catalog.read_engines_dir` for imported bundles: every
`trtllm_engine` component is a profile (its signed engine section says what it was built
for), and a base model tagged `cpu` or `vllm` offers a CPU or a generic-GPU profile.
Selection itself is `hardware.profiles.select_profile`, unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.hardware.profiles import EngineProfile
from appliance.updates.lifecycle import BundleRecord, ComponentRecord

SERVING_FILE = "serving.json"
COMPONENTS_DIR = "components"
# The share of a GPU's memory vLLM takes for itself (its gpu_memory_utilization default);
# the weights it loads must fit in that share, before any room for the KV cache.
VLLM_MEMORY_SHARE = 0.9


def external_bases(conn: sqlite3.Connection, bundle: BundleRecord) -> list[ComponentRecord]:
    """Base models an adapter needs that this bundle does not ship (an adapter-only update):
    taken from a bundle on the appliance that is approved, installing or active."""
    own = {c.digest for c in bundle.components if c.kind == "base_model"}
    wanted = {c.base_model["digest"] for c in bundle.components
              if c.kind == "lora_adapter" and c.base_model} - own
    found = []
    for digest in sorted(wanted):
        row = conn.execute(
            "SELECT c.name, c.kind, c.role, c.digest, c.info, c.files FROM bundle_components c"
            " JOIN bundles b ON b.id = c.bundle_id WHERE c.kind = 'base_model' AND c.digest = ?"
            " AND b.state IN ('APPROVED', 'INSTALLING', 'ACTIVE') ORDER BY b.id DESC LIMIT 1",
            (digest,)).fetchone()
        if row:
            n, k, r, d, i, fs = row
            found.append(ComponentRecord(n, k, r, d, json.loads(i),
                                         tuple((f[0], f[1], int(f[2])) for f in json.loads(fs))))
    return found


def bundle_profiles(bundle: BundleRecord, bases: list[ComponentRecord]) -> list[EngineProfile]:
    profiles = []
    for c in bundle.components:
        if c.kind == "trtllm_engine":
            e = c.info["engine"]
            profiles.append(EngineProfile(
                id=c.name, kind="trtllm_engine", gpu_archs=tuple(e["gpu_archs"]),
                trtllm_version=e["trtllm_version"], tp_size=e["tp"], pp_size=e["pp"],
                min_gpu_memory_gib=e["min_gpu_memory_mib"] / 1024,  # exact: never round down
                extra={"component": c.name}))
    adapters = [c for c in bundle.components if c.kind == "lora_adapter"]
    for c in [*(c for c in bundle.components if c.kind == "base_model"), *bases]:
        tags = set(c.info.get("tags", []))
        if "vllm" in tags:
            profiles.append(EngineProfile(id=f"{c.name}-vllm", kind="vllm",
                                          gpu_archs=("generic",),
                                          min_gpu_memory_gib=_vllm_gib(c, adapters),
                                          extra={"component": c.name}))
        if "cpu" in tags:
            profiles.append(EngineProfile(id=f"{c.name}-cpu", kind="cpu", gpu_archs=("cpu",),
                                          extra={"component": c.name}))
    return profiles


def adapters_of(base: ComponentRecord, adapters: list[ComponentRecord]
                ) -> list[ComponentRecord]:
    """The adapters trained on `base` (named by its digest): what vLLM loads beside it."""
    return [a for a in adapters if (a.base_model or {}).get("digest") == base.digest]


def _vllm_gib(base: ComponentRecord, adapters: list[ComponentRecord]) -> float:
    """What one GPU needs to serve `base` with vLLM (tp 1): the signed sizes of the files it
    loads, the base and the adapters trained on it, within vLLM's share of the memory. A
    floor, not an estimate: a GPU below it cannot load the model at all, so the profile is
    refused at approval instead of failing its health check after the switch."""
    loaded = sum(size for c in [base, *adapters_of(base, adapters)] for _, _, size in c.files)
    return loaded / (1 << 30) / VLLM_MEMORY_SHARE


def release_components(bundle: BundleRecord, bases: list[ComponentRecord]
                       ) -> list[ComponentRecord]:
    return [*bundle.components, *(b for b in bases if bundle.component(b.name) is None)]


def release_files(components: list[ComponentRecord]) -> list[tuple[str, str, int]]:
    """Every file of the release directory as (relpath, signed sha256, size)."""
    return [(f"{COMPONENTS_DIR}/{c.name}/{rel}", sha, size)
            for c in components for rel, sha, size in c.files]


def serving_config(bundle: BundleRecord, profile: EngineProfile,
                   components: list[ComponentRecord]) -> dict[str, Any]:
    """What the serving layer reads from `current/serving.json`: which runtime, which files."""
    def where(c: ComponentRecord) -> str:
        return f"{COMPONENTS_DIR}/{c.name}"

    component = profile.extra.get("component")
    bases = [c for c in components if c.kind == "base_model"]
    def listed(adapters: list[ComponentRecord]) -> list[dict[str, Any]]:
        return [{"name": a.name, "path": where(a), "base_model": a.base_model}
                for a in adapters]

    adapters = [c for c in components if c.kind == "lora_adapter"]
    runtime = {"trtllm_engine": "tensorrt_llm", "vllm": "vllm", "cpu": "transformers"}
    cfg: dict[str, Any] = {
        "format": "appliance.serving/1", "bundle": bundle.ref, "bundle_digest": bundle.digest,
        "runtime": runtime[profile.kind], "profile": profile.to_dict(),
        "adapters": listed(adapters),
        "golden_sets": [where(c) for c in components if c.kind == "golden_set"],
    }
    if profile.kind == "trtllm_engine":
        cfg["engine_dir"] = f"{COMPONENTS_DIR}/{component}"
    else:
        base = next((c for c in bases if c.name == component), None) if component else \
            (bases[0] if bases else None)
        cfg["model_dir"] = where(base) if base else \
            (f"{COMPONENTS_DIR}/{component}" if component else None)
        if base is not None:
            # vLLM loads every listed adapter as a LoRA module of this base: one trained on
            # another base model of the bundle would fail to load or answer wrongly.
            cfg["adapters"] = listed(adapters_of(base, adapters))
    return cfg
