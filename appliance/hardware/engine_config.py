"""A TensorRT-LLM engine directory's own `config.json`, read without importing tensorrt_llm.

TensorRT-LLM (0.8 and later) writes `config.json` beside `rank<N>.engine` when it saves an
engine (`Engine.save` -> `EngineConfig.to_dict`): `version`, `pretrained_config` (with
`architecture`, `dtype`, `mapping`, `quantization`) and `build_config` (limits and
`plugin_config`). The appliance trusts what the engine says about itself over what a bundle
declares, so any disagreement is a refusal before install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import HardwareRefused
from appliance.hardware.profiles import EngineProfile
from appliance.text import not_plain

_REBUILD = "rebuild the engine or correct the bundle's declared profile; nothing was installed"


@dataclass(frozen=True)
class EngineConfig:
    """The parts of an engine's config.json that decide where it can run."""

    path: Path
    version: str
    architecture: str
    dtype: str
    tp_size: int
    pp_size: int
    cp_size: int
    world_size: int
    gpus_per_node: int | None = None
    quant_algo: str | None = None
    kv_cache_quant_algo: str | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    plugin_config: dict[str, Any] = field(default_factory=dict)

    @property
    def rank_files(self) -> list[str]:
        return [f"rank{r}.engine" for r in range(self.world_size)]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.version,
                "architecture": self.architecture, "dtype": self.dtype,
                "tp_size": self.tp_size, "pp_size": self.pp_size, "cp_size": self.cp_size,
                "world_size": self.world_size, "gpus_per_node": self.gpus_per_node,
                "quant_algo": self.quant_algo, "kv_cache_quant_algo": self.kv_cache_quant_algo,
                "max_batch_size": self.max_batch_size, "max_input_len": self.max_input_len,
                "max_seq_len": self.max_seq_len, "max_num_tokens": self.max_num_tokens}


def _refuse(engine_dir: Path, what: str) -> HardwareRefused:
    return HardwareRefused(f"engine {engine_dir.name}: {what}", _REBUILD)


def _int(section: dict, key: str, engine_dir: Path, default: int | None = None) -> int | None:
    value = section.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(engine_dir, f"config.json {key} is not an integer ({value!r})")
    return value


def read_engine_config(engine_dir: Path) -> EngineConfig:
    """Parse `<engine_dir>/config.json`. A missing, malformed or pre-0.8 file is refused."""
    engine_dir = Path(engine_dir)
    path = engine_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(engine_dir, "no config.json in the engine directory") from None
    except (OSError, ValueError, RecursionError) as exc:
        # ValueError: not UTF-8, not JSON, or an integer of over 4300 digits;
        # RecursionError: nested too deeply to parse
        raise _refuse(engine_dir, f"config.json is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise _refuse(engine_dir, "config.json is not a JSON object")
    if "builder_config" in data and "pretrained_config" not in data:
        # The pre-0.8 layout carries no TensorRT-LLM version, so it cannot be cross-checked.
        raise _refuse(engine_dir, "config.json uses the pre-0.8 layout without a version")
    missing = [k for k in ("version", "pretrained_config", "build_config") if k not in data]
    if missing:
        raise _refuse(engine_dir, f"config.json lacks {', '.join(missing)}")
    pretrained, build = data["pretrained_config"], data["build_config"]
    if not isinstance(pretrained, dict) or not isinstance(build, dict):
        raise _refuse(engine_dir, "config.json pretrained_config/build_config are not objects")
    mapping = pretrained.get("mapping")
    if not isinstance(mapping, dict):
        raise _refuse(engine_dir, "config.json pretrained_config has no mapping")
    problem = not_plain(str(data["version"]))
    if problem:
        # Quoted in the refusal of a mismatch, which is printed and recorded.
        raise _refuse(engine_dir, f"config.json version {problem}")
    quant = pretrained.get("quantization") or {}
    plugins = build.get("plugin_config") or {}
    tp = _int(mapping, "tp_size", engine_dir, 1)
    pp = _int(mapping, "pp_size", engine_dir, 1)
    cp = _int(mapping, "cp_size", engine_dir, 1)
    return EngineConfig(
        path=engine_dir,
        version=str(data["version"]),
        architecture=str(pretrained.get("architecture", "")),
        dtype=str(pretrained.get("dtype", "")),
        tp_size=tp, pp_size=pp, cp_size=cp,
        world_size=_int(mapping, "world_size", engine_dir, tp * pp * cp),
        gpus_per_node=_int(mapping, "gpus_per_node", engine_dir),
        quant_algo=quant.get("quant_algo") if isinstance(quant, dict) else None,
        kv_cache_quant_algo=quant.get("kv_cache_quant_algo") if isinstance(quant, dict) else None,
        max_batch_size=_int(build, "max_batch_size", engine_dir),
        max_input_len=_int(build, "max_input_len", engine_dir),
        max_seq_len=_int(build, "max_seq_len", engine_dir),
        max_num_tokens=_int(build, "max_num_tokens", engine_dir),
        plugin_config=dict(plugins) if isinstance(plugins, dict) else {},
    )


def cross_check(engine: EngineConfig, declared: EngineProfile,
                check_files: bool = True) -> list[str]:
    """Every way the engine disagrees with its declared profile; empty when they agree."""
    problems = []
    if declared.kind != "trtllm_engine":
        problems.append(f"declared kind {declared.kind} is not trtllm_engine")
    if engine.version != declared.trtllm_version:
        problems.append(f"built with TensorRT-LLM {engine.version}, "
                        f"declared {declared.trtllm_version}")
    if engine.tp_size != declared.tp_size:
        problems.append(f"tp_size {engine.tp_size}, declared {declared.tp_size}")
    if engine.pp_size != declared.pp_size:
        problems.append(f"pp_size {engine.pp_size}, declared {declared.pp_size}")
    own = engine.tp_size * engine.pp_size * engine.cp_size
    if engine.world_size != own:
        problems.append(f"world_size {engine.world_size} is not tp x pp x cp = {own}")
    if engine.world_size != declared.gpus_needed:
        problems.append(f"world_size {engine.world_size}, declared tp x pp = "
                        f"{declared.gpus_needed}")
    if engine.gpus_per_node is not None and 0 < engine.gpus_per_node < engine.world_size:
        # Ranks map to local GPUs by rank % gpus_per_node: on one node two ranks would share
        # a GPU. A profile (and this appliance's serving) is one node.
        problems.append(f"gpus_per_node {engine.gpus_per_node} is less than world_size "
                        f"{engine.world_size}: built for several nodes, served on one")
    if check_files:
        absent, count = _absent_ranks(engine)
        if count:
            more = f" (and {count - len(absent)} more)" if count > len(absent) else ""
            problems.append(f"missing {', '.join(absent)}{more}")
    return problems


_NAMED_RANKS = 8  # missing rank files named in a refusal; the rest are counted


def _absent_ranks(engine: EngineConfig) -> tuple[list[str], int]:
    """The first missing rank files and how many are missing, from one listing of the
    directory: config.json may claim any world size, and a name and a stat for each of
    10**10 ranks was a MemoryError (or an hour) before the refusal."""
    present = set()
    for entry in engine.path.iterdir():
        rank = entry.name[4:-7]
        if (entry.name == f"rank{rank}.engine" and rank.isdecimal() and rank == str(int(rank))
                and int(rank) < engine.world_size and entry.is_file()):
            present.add(int(rank))
    count = max(0, engine.world_size - len(present))
    absent, rank = [], 0
    while len(absent) < min(count, _NAMED_RANKS):
        if rank not in present:
            absent.append(f"rank{rank}.engine")
        rank += 1
    return absent, count


def verify_engine(engine_dir: Path, declared: EngineProfile,
                  check_files: bool = True) -> EngineConfig:
    """Read the engine's config and refuse it, in one line, if it contradicts its profile."""
    engine = read_engine_config(engine_dir)
    problems = cross_check(engine, declared, check_files)
    if problems:
        raise HardwareRefused(
            f"engine {Path(engine_dir).name} does not match declared profile {declared.id}: "
            + "; ".join(problems), _REBUILD)
    return engine
