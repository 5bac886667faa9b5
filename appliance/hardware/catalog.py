"""Engine profiles from a plain directory, until the bundle format carries them.

`hw fit PATH` takes a directory whose subdirectories are engines, each with a `profile.json`
(an `EngineProfile`) and, for TensorRT-LLM engines, the engine's own `config.json`. The
bundle issue replaces `read_engines_dir` with a reader of a verified bundle's components;
everything after it (cross-check, selection) stays the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.errors import InvalidInput
from appliance.hardware.engine_config import verify_engine
from appliance.hardware.profiles import EngineProfile

PROFILE_FILE = "profile.json"


def _read_profile(engine_dir: Path) -> EngineProfile:
    try:
        data = json.loads((engine_dir / PROFILE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # also too deeply nested
        raise InvalidInput(f"{engine_dir.name}/{PROFILE_FILE} is unreadable ({exc})",
                           "each engine directory needs a valid profile.json") from None
    return EngineProfile.from_dict(data)


def read_engines_dir(path: Path) -> list[EngineProfile]:
    """Every engine under `path` (or `path` itself if it is one engine), cross-checked.

    A TensorRT-LLM engine whose config.json contradicts its profile raises HardwareRefused:
    a bundle that lies about one engine is not trusted for the others.
    """
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(f"{path} is not a directory",
                           "pass a directory of engine subdirectories, each with profile.json")
    dirs = [path] if (path / PROFILE_FILE).is_file() else sorted(
        d for d in path.iterdir() if d.is_dir() and (d / PROFILE_FILE).is_file())
    if not dirs:
        raise InvalidInput(f"no engine profiles under {path}",
                           "each engine subdirectory needs a profile.json")
    profiles = []
    for engine_dir in dirs:
        profile = _read_profile(engine_dir)
        if profile.kind == "trtllm_engine":
            verify_engine(engine_dir, profile)
        profiles.append(profile)
    return profiles
