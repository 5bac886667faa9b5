"""A run's stored job directory, read back for the history view: files, pages, events.

Only what the run left as a record is shown: its inputs (redacted extra vars, inventory,
known_hosts) and ansible-runner's artifacts, never the scratch directories.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from appliance.provision.events import EventTracker, TaskEvent

PAGE = 64 * 1024
SCRATCH = {"home", "tmp", "ansible", "remote-tmp"}


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    size: int


@dataclass(frozen=True)
class ArtifactChunk:
    name: str
    offset: int
    text: str
    next_offset: int | None
    size: int


def _natural(path: Path) -> list[tuple[int, int, str]]:
    """Job events by their counter (2 before 10), everything else by name."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t)
            for t in re.split(r"(\d+)", str(path))]


def list_files(job_dir: Path) -> list[ArtifactInfo]:
    out = []
    for path in sorted(job_dir.rglob("*"), key=_natural) if job_dir.is_dir() else ():
        rel = path.relative_to(job_dir)
        if rel.parts[0] in SCRATCH or not path.is_file() or path.is_symlink():
            continue
        out.append(ArtifactInfo(str(rel), path.stat().st_size))
    return out


def read_page(job_dir: Path, name: str, offset: int = 0, limit: int = PAGE
              ) -> ArtifactChunk | None:
    """A page of one file, or None if the name is not a record file inside the job."""
    root = job_dir.resolve()
    path = (root / name).resolve()
    if root not in path.parents or path.relative_to(root).parts[0] in SCRATCH \
            or not path.is_file():
        return None
    size = path.stat().st_size
    offset = min(max(0, offset), size)  # past the end: nothing more (seek refuses 2^63)
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(max(1, min(limit, 4 * PAGE)))
    end = offset + len(data)
    return ArtifactChunk(name, offset, data.decode("utf-8", errors="replace"),
                         end if end < size else None, size)


def replay_events(job_dir: Path, run_id: str, hosts: tuple[str, ...]) -> list[TaskEvent]:
    """The task events of a finished run, rebuilt from ansible-runner's job_events."""
    events_dir = job_dir / "artifacts" / run_id / "job_events"
    raws = []
    for path in events_dir.glob("*.json") if events_dir.is_dir() else ():
        try:
            raws.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    collected: list[TaskEvent] = []
    tracker = EventTracker(hosts, 0, collected.extend, throttle_s=0)
    for raw in sorted(raws, key=lambda r: r.get("counter", 0)):
        tracker.handle(raw)
    tracker.flush()
    return collected
