"""The demo bundle behind `appliance demo setup` (and the tests' bundles): a tiny model made
on the spot (safetensors weights, config, tokenizer), a LoRA adapter on it, a TensorRT-LLM
engine stand-in and a golden set, published with the same commands a vendor runs.

Nothing is downloaded: the weights are a few hundred deterministic floats.
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


def tiny_golden(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "golden.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "answer": f"a{i}"})
                                            + "\n" for i in range(5)))
    (d / "card.md").write_text("# Golden set\nFive synthetic questions.\n")
    return d


def tiny_engine(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "rank0.engine").write_bytes(bytes(range(256)) * 4)
    (d / "config.json").write_text(json.dumps({"builder_config": {"tp": 1}}))
    return d


ENGINE = EngineSpec(("sm_90",), "0.17.0", 1, 1, 40_000)



@dataclass(frozen=True)
class DemoBundle:
    media: Path
    root: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.root)


def build_demo_bundle(workdir: Path, now: datetime | None = None) -> DemoBundle:
    """Keys, repository and one published release under `workdir` (a demo vendor)."""
    workdir = Path(workdir)
    keys = workdir / "keys"
    for name in ("root", "targets", "online"):
        if not (keys / f"{name}.pem").exists():
            bkeys.generate(keys / f"{name}.pem")
    pub = {n: bkeys.public_path_for(keys / f"{n}.pem").read_bytes()
           for n in ("root", "targets", "online")}
    repo = workdir / "repo"
    publish.init_repo(repo, "demo-clinical", "Demo Vendor", [pub["root"]],
                      targets_keys=[pub["targets"]], online_keys=[pub["online"]])
    src = workdir / "src"
    key = keys / "targets.pem"
    publish.add_component(repo, "base_model", tiny_base(src / "tiny-base"), key,
                          name="tiny-base", tags=["cpu", "demo"])
    publish.add_component(repo, "lora_adapter", tiny_adapter(src / "tiny-adapter"), key,
                          name="tiny-adapter", base_model="tiny-base", tags=["cpu"])
    publish.add_component(repo, "trtllm_engine", tiny_engine(src / "tiny-engine-h100"), key,
                          name="tiny-engine-h100", engine=ENGINE, tags=["h100"])
    publish.add_component(repo, "golden_set", tiny_golden(src / "tiny-golden"), key,
                          name="tiny-golden")
    publish.set_release(repo, description="Demo bundle: a tiny model made on the spot")
    for name in ("root", "targets", "online"):
        publish.sign(repo, keys / f"{name}.pem", now)
    media = publish.publish(repo, workdir / "media" / "demo-clinical-1")
    return DemoBundle(media, (media / "metadata" / "1.root.json").read_bytes())
