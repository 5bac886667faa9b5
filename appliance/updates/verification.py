"""The VERIFIED step: the imported bundle is still what was signed, and it is coherent.

Import already checked signatures; this step re-checks what the appliance holds now, just
before people are asked to approve it: the description's digest, every payload object in
the content store (re-hashed), that each adapter's base model is available, and that every
TensorRT-LLM engine's own config.json agrees with its signed profile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.bundle.store import ContentStore
from appliance.errors import ApplianceError
from appliance.hardware.engine_config import verify_engine
from appliance.hardware.profiles import EngineProfile
from appliance.updates.lifecycle import BundleRecord, ComponentRecord

BLOCK = 4 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(BLOCK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0
    engines_checked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The reason the step records, passed or failed."""
        if not self.ok:
            return "; ".join(self.reasons)
        engines = f" and {len(self.engines_checked)} engine(s)" if self.engines_checked else ""
        return (f"verification passed: {self.files_checked} file(s), {self.bytes_checked} "
                f"bytes{engines} checked against the signed manifest")


def _check_objects(store: ContentStore, comps: tuple[ComponentRecord, ...],
                   reasons: list[str]) -> tuple[int, int]:
    files = nbytes = 0
    seen: set[str] = set()
    for c in comps:
        for rel, sha, size in c.files:
            if sha in seen:
                continue
            seen.add(sha)
            path = store.path_of(sha)
            try:
                if path.stat().st_size != size:
                    reasons.append(f"{c.name}/{rel}: stored object has the wrong size")
                    continue
                if sha256_file(path) != sha:
                    reasons.append(f"{c.name}/{rel}: stored object no longer matches its "
                                   "signed SHA-256")
                    continue
            except FileNotFoundError:
                reasons.append(f"{c.name}/{rel}: missing from the content store")
                continue
            files += 1
            nbytes += size
    return files, nbytes


def engine_profile(c: ComponentRecord) -> EngineProfile:
    e = c.info["engine"]
    return EngineProfile(id=c.name, kind="trtllm_engine", gpu_archs=tuple(e["gpu_archs"]),
                         trtllm_version=e["trtllm_version"], tp_size=e["tp"], pp_size=e["pp"],
                         min_gpu_memory_gib=e["min_gpu_memory_mib"] / 1024)


def check_engine(store: ContentStore, c: ComponentRecord, scratch: Path) -> str | None:
    """Cross-check an engine's config.json with its signed profile, reading the store through
    a scratch directory of symlinks (the engine reader wants a directory)."""
    tmp = Path(tempfile.mkdtemp(prefix=".engine-check-", dir=scratch))
    try:
        for rel, sha, _ in c.files:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(store.path_of(sha), dest)
        verify_engine(tmp, engine_profile(c))
    except ApplianceError as exc:
        return exc.message.replace(tmp.name, c.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def verify_bundle(bundle: BundleRecord, store: ContentStore, scratch: Path,
                  base_available: Callable[[str], bool]) -> VerificationResult:
    reasons: list[str] = []
    if hashlib.sha256(bundle.description.encode()).hexdigest() != bundle.digest:
        reasons.append("the stored bundle description no longer matches the bundle digest")
    if not bundle.components:
        reasons.append("the bundle has no components")
    files, nbytes = _check_objects(store, bundle.components, reasons)
    own_bases = {c.digest for c in bundle.components if c.kind == "base_model"}
    for c in bundle.components:
        base = c.base_model
        if c.kind == "lora_adapter" and base and base["digest"] not in own_bases \
                and not base_available(base["digest"]):
            reasons.append(f"adapter {c.name} needs base model {base['name']} "
                           f"({base['digest'][:12]}...), which is not on this appliance")
    engines = []
    if not reasons:
        scratch.mkdir(parents=True, exist_ok=True)
        for c in bundle.components:
            if c.kind == "trtllm_engine":
                problem = check_engine(store, c, scratch)
                if problem:
                    reasons.append(problem)
                else:
                    engines.append(c.name)
    return VerificationResult(not reasons, reasons, files, nbytes, engines)
