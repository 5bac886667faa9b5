"""The demo vendor behind `appliance demo setup` (and the tests' bundles): a tiny model made
on the spot (safetensors weights, config, tokenizer), a LoRA adapter on it, a TensorRT-LLM
engine directory in the current (0.8+) layout, a golden set and the vendor's signed
evaluation evidence, published with the same commands a vendor runs.

Nothing is downloaded: the weights are a few hundred deterministic floats, and the engine's
rank file is a stand-in (its config.json is what the appliance reads and cross-checks).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.bundle import keys as bkeys
from appliance.bundle import publish
from appliance.bundle.model import EngineSpec
from appliance.bundle.repo import Repo
from appliance.bundle.trust import fingerprint


def safetensors_bytes(tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """A valid safetensors file: 8-byte header length, JSON header, raw F32 data."""
    header, offset, data = {}, 0, b""
    for name, (shape, raw) in tensors.items():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset,
                                                                          offset + len(raw)]}
        offset += len(raw)
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def _floats(n: int, seed: int) -> bytes:
    return b"".join(struct.pack("<f", ((i * 7919 + seed) % 1000) / 1000.0) for i in range(n))


def tiny_base(d: Path, seed: int = 1) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_bytes(safetensors_bytes(
        {"embed.weight": ([32, 8], _floats(256, seed)), "lm_head.weight": ([32, 8],
                                                                          _floats(256, seed + 1))}))
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32,
                                               "hidden_size": 8, "num_hidden_layers": 1}))
    vocab = {f"t{i}": i for i in range(32)}
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {
        "type": "WordLevel", "vocab": vocab, "unk_token": "t0"}}))
    return d


def tiny_adapter(d: Path, seed: int = 3) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(safetensors_bytes(
        {"lora_A.weight": ([2, 8], _floats(16, seed)), "lora_B.weight": ([8, 2],
                                                                         _floats(16, seed + 1))}))
    (d / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4,
                                                       "peft_type": "LORA"}))
    return d


def tiny_golden(d: Path, n: int = 5) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "golden.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "answer": f"a{i}"})
                                            + "\n" for i in range(n)))
    (d / "card.md").write_text(f"# Golden set\n{n} synthetic questions.\n")
    return d


def tiny_engine(d: Path, tp: int = 1, version: str = "0.17.0") -> Path:
    """An engine directory as TensorRT-LLM 0.8+ `Engine.save` lays it out: config.json with
    version, pretrained_config (the tiny base's shape, with the mapping) and build_config,
    and one rank file per GPU (tiny stand-ins)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "version": version,
        "pretrained_config": {
            "architecture": "LlamaForCausalLM", "dtype": "float16", "vocab_size": 32,
            "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
            "max_position_embeddings": 64,
            "mapping": {"world_size": tp, "gpus_per_node": 8, "tp_size": tp, "pp_size": 1,
                        "cp_size": 1},
            "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}},
        "build_config": {"max_batch_size": 8, "max_input_len": 32, "max_seq_len": 64,
                         "max_num_tokens": 256,
                         "plugin_config": {"gpt_attention_plugin": "auto",
                                           "gemm_plugin": None}}}, indent=1))
    for r in range(tp):
        (d / f"rank{r}.engine").write_bytes(bytes(range(256)) * (4 + r))
    return d


def tiny_evidence(d: Path, golden: str, golden_digest: str, metrics: dict[str, float],
                  samples: int) -> Path:
    """Evaluation evidence as `appliance.updates.evidence` reads it: the publisher's metrics
    on one golden set, bound to that set's digest."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "evidence.json").write_text(json.dumps({
        "schema_version": 1, "golden_set": golden, "golden_set_digest": golden_digest,
        "samples": samples, "metrics": metrics}, indent=1, sort_keys=True))
    return d


ENGINE = EngineSpec(("sm_90",), "0.17.0", 1, 1, 40_000)
GOLDEN_SIZE = 20
KEY_NAMES = ("root", "targets", "online")


@dataclass(frozen=True)
class DemoRelease:
    """What the demo vendor says about one release: the adapter it trained and the metrics
    it states for it (the vendor's claim, signed with the bundle; nothing runs here)."""

    version: int
    adapter_seed: int
    exact_match: float
    hallucination_rate: float
    description: str


# Version 1 is what the demo appliance runs; version 2 (a retrained adapter) awaits approval.
RELEASES = (
    DemoRelease(1, 3, 0.90, 0.05, "Demo bundle 1: tiny base model, adapter, H100 engine"),
    DemoRelease(2, 5, 0.95, 0.0, "Demo bundle 2: the adapter retrained; fewer wrong answers"),
)


@dataclass(frozen=True)
class DemoBundle:
    """The demo vendor's published releases (media directories, oldest first) and its root."""

    releases: tuple[Path, ...]
    root: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.root)


def _keys(workdir: Path) -> Path:
    keys = workdir / "keys"
    for name in KEY_NAMES:
        if not (keys / f"{name}.pem").exists():
            bkeys.generate(keys / f"{name}.pem")
    return keys


def publish_demo_release(workdir: Path, release: DemoRelease,
                         now: datetime | None = None) -> Path:
    """Publish one release of the demo vendor under `workdir` (keys and repository are made
    on first use); returns its media directory."""
    workdir = Path(workdir)
    keys, repo = _keys(workdir), workdir / "repo"
    if not (repo / "repo.json").exists():
        pub = {n: bkeys.public_path_for(keys / f"{n}.pem").read_bytes() for n in KEY_NAMES}
        publish.init_repo(repo, "demo-clinical", "Demo Vendor", [pub["root"]],
                          targets_keys=[pub["targets"]], online_keys=[pub["online"]])
    first = Repo(repo).config().last_version == 0
    src, key = workdir / f"src-v{release.version}", keys / "targets.pem"

    def add(kind: str, path: Path, name: str, **kw) -> dict:
        return publish.add_component(repo, kind, path, key, name=name, **kw).custom

    add("base_model", tiny_base(src / "tiny-base"), "tiny-base", tags=["cpu", "demo"])
    add("lora_adapter", tiny_adapter(src / "tiny-adapter", release.adapter_seed),
        "tiny-adapter", base_model="tiny-base", tags=["cpu"])
    add("trtllm_engine", tiny_engine(src / "tiny-engine-h100"), "tiny-engine-h100",
        engine=ENGINE, tags=["h100"])
    golden = add("golden_set", tiny_golden(src / "tiny-golden", GOLDEN_SIZE), "tiny-golden")
    add("evaluation_evidence", tiny_evidence(
        src / "tiny-evidence", "tiny-golden", golden["digest"],
        {"exact_match": release.exact_match, "hallucination_rate": release.hallucination_rate},
        GOLDEN_SIZE), "tiny-evidence")
    publish.set_release(repo, version=release.version, description=release.description)
    # The root key signs only the first release: later ones keep the same root.
    for name in KEY_NAMES if first else KEY_NAMES[1:]:
        publish.sign(repo, keys / f"{name}.pem", now)
    (workdir / "media").mkdir(exist_ok=True)
    return publish.publish(repo, workdir / "media" / f"demo-clinical-{release.version}")


def build_demo_bundle(workdir: Path, now: datetime | None = None,
                      releases: tuple[DemoRelease, ...] = RELEASES) -> DemoBundle:
    """Keys, repository and the demo releases under `workdir` (a demo vendor)."""
    media = tuple(publish_demo_release(workdir, r, now) for r in releases)
    return DemoBundle(media, (media[0] / "metadata" / "1.root.json").read_bytes())
