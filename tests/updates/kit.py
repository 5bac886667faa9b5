"""Real signed bundles for the update lifecycle, built once per test session with the
publisher code (bundlekit's keys and tiny models), plus the steps every test repeats.

Releases of one publisher, `demo-clinical`:
  v1  base (cpu tag), adapter a1, engine for sm_90 (a real 0.8+ config.json), golden set,
      an old golden set, evidence (exact_match 0.90)
  v2  same base and engine, adapter a2 (changed), golden set, a second golden set of
      `SHARDS` files (added; many files give the crash test many kill points), evidence 0.93;
      the old golden set is dropped (removed)
  v3  like v2 but its evidence says exact_match 0.50 (fails the gate)
  v4  an engine whose config.json says tp 2 while its signed profile says tp 1
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.bundle import publish
from appliance.bundle.demo_bundle import tiny_engine
from appliance.bundle.model import EngineSpec
from appliance.errors import InvalidInput
from appliance.hardware import GpuInventory, RecordedSource, write_reading
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services import updates
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import (
    BUILT,
    new_publisher,
    session_keys,
    tiny_adapter,
    tiny_base,
    tiny_golden,
)
from tests.conftest import PASSWORD

SHARDS = 90
H100_READING = Path(__file__).parents[1] / "hardware" / "fixtures" / "h100-sxm-80gb-x8.json"
A100_READING = Path(__file__).parents[1] / "hardware" / "fixtures" / "a100-sxm-40gb-x1.json"
ENGINE = EngineSpec(("sm_90",), "0.17.0", 1, 1, 40_000)
GATES = {"require_evidence": True, "min_metrics": {"exact_match": 0.85},
         "max_metrics": {"hallucination_rate": 0.05}}


def engine_dir(d: Path, tp: int = 1) -> Path:
    """A TensorRT-LLM 0.17 engine directory as `Engine.save` writes it (tiny rank files)."""
    return tiny_engine(d, tp=tp)


def shards_dir(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"shard-{i:03d}.jsonl").write_text(json.dumps({"prompt": f"p{i}",
                                                            "answer": f"a{i}"}) + "\n")
    return d


def evidence_dir(d: Path, golden: str, golden_digest: str, metrics: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "evidence.json").write_text(json.dumps({
        "schema_version": 1, "golden_set": golden, "golden_set_digest": golden_digest,
        "samples": 5, "metrics": metrics}))
    return d


@dataclass(frozen=True)
class Media:
    root: bytes
    v1: Path
    v2: Path
    v3: Path
    v4: Path


def _release(repo: Path, keys, out: Path) -> Path:
    publish.build(repo, BUILT)
    for name in ("root1", "targets", "online"):
        try:
            publish.sign(repo, keys.private(name), BUILT)
        except InvalidInput:
            pass    # this key signs nothing in this release (the root did not change)
    return publish.publish(repo, out)


def _add(repo: Path, keys, kind: str, src: Path, name: str, **kw) -> dict:
    return publish.add_component(repo, kind, src, keys.private("targets"), name=name,
                                 **kw).custom


_MEDIA: dict[str, Media] = {}


def build_media(base: Path) -> Media:
    """All releases, built once per test session (signing is the slow part)."""
    if "media" in _MEDIA:
        return _MEDIA["media"]
    keys = session_keys(base)
    work = base / "update-media"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    pub = new_publisher(work, keys)
    src = work / "src"
    base_src = tiny_base(src / "base")
    golden_src = tiny_golden(src / "golden")
    outs = {}
    for version, adapter_seed, score, extra in ((1, 3, 0.90, "old"), (2, 5, 0.93, "shards"),
                                                (3, 7, 0.50, "shards"), (4, 9, 0.95, "bad")):
        _add(pub.repo, keys, "base_model", base_src, "tiny-base", tags=["cpu", "demo"])
        _add(pub.repo, keys, "lora_adapter", tiny_adapter(src / f"adapter{version}",
                                                          adapter_seed),
             "tiny-adapter", base_model="tiny-base")
        eng = engine_dir(src / f"engine{version}", tp=2 if extra == "bad" else 1)
        _add(pub.repo, keys, "trtllm_engine", eng, "tiny-engine-h100", tags=["h100"],
             engine=ENGINE, check_engine=extra != "bad")   # the appliance must refuse it
        golden = _add(pub.repo, keys, "golden_set", golden_src, "tiny-golden")
        if extra == "old":
            _add(pub.repo, keys, "golden_set", tiny_golden(src / "old-golden"), "old-golden")
        if extra == "shards":
            _add(pub.repo, keys, "golden_set", shards_dir(src / "shards", SHARDS),
                 "shard-golden")
        _add(pub.repo, keys, "evaluation_evidence",
             evidence_dir(src / f"evidence{version}", "tiny-golden", golden["digest"],
                          {"exact_match": score, "hallucination_rate": 0.01}), "tiny-evidence")
        outs[version] = _release(pub.repo, keys, work / f"usb-v{version}")
    root = (outs[1] / "metadata" / "1.root.json").read_bytes()
    _MEDIA["media"] = Media(root, outs[1], outs[2], outs[3], outs[4])
    return _MEDIA["media"]


def sign_req(user: str, meaning: str = "approved", reason: str = "reviewed the evidence"
             ) -> SignatureRequest:
    return SignatureRequest(meaning, reason, PASSWORD, user, acknowledge_statement=True)


def h100() -> RecordedSource:
    return RecordedSource(H100_READING)


def a100() -> RecordedSource:
    return RecordedSource(A100_READING)


def no_driver(tmp: Path) -> RecordedSource:
    path = tmp / "no-driver.json"
    write_reading(GpuInventory(driver_found=False, error="NVML Shared Library Not Found"), path)
    return RecordedSource(path)


def trust_and_import(app, security, it, media: Media, *versions: int) -> list[str]:
    trust_service.init_trust(app, security, media.root,
                             sign_req(security.username, reason="installer root"), "installer")
    refs = []
    for v in versions:
        r = media_service.import_bundle(app, it, getattr(media, f"v{v}"))
        refs.append(f"{r.name}@{r.version}")
    return refs


def approve(app, admin, ref: str, source=None):
    """Open the approval view (recorded), then sign the approval."""
    updates.show(app, admin, ref, source=source or h100())
    return updates.approve(app, admin, ref, sign_req(admin.username), source=source or h100())
