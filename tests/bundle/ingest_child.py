"""Runs an ingest in its own process, for tests that kill it or give it a tiny file system.

Usage: python ingest_child.py MODE MEDIA_DIR STORE_DIR WANTED_JSON [FILLER_PATH]
  pause    copy with one worker; after the first block of the last file, print PAUSED and
           hang until killed (the parent sends SIGKILL)
  fill     after the first block, fill the store's file system (real ENOSPC on the next
           write), then print one JSON line describing the outcome and the store
  plain    ingest and print one JSON line describing the outcome and the store
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

from appliance.bundle.media import DirectoryMedia, MediaFile
from appliance.bundle.store import ContentStore, WantedFile
from appliance.errors import BundleRefused

BLOCK = 1 << 20


class HookedMedia:
    """Real directory media whose reads of one file call `hook` after the first block."""

    def __init__(self, root: Path, relpath: str, hook) -> None:
        self.inner = DirectoryMedia(root)
        self.label = self.inner.label
        self.relpath = relpath
        self.hook = hook

    def list_files(self) -> list[MediaFile]:
        return self.inner.list_files()

    def read_bytes(self, relpath: str, max_size: int) -> bytes:
        return self.inner.read_bytes(relpath, max_size)

    def open(self, relpath: str):
        stream = self.inner.open(relpath)
        return _Hooked(stream, self.hook) if relpath == self.relpath else stream


class _Hooked(io.RawIOBase):
    def __init__(self, inner, hook) -> None:
        self.inner, self.hook, self.blocks = inner, hook, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.blocks == 1:
            self.hook()
        self.blocks += 1
        return self.inner.readinto(buffer)

    def close(self) -> None:
        self.inner.close()
        super().close()


def fill_disk(path: Path) -> None:
    """Write until the file system says ENOSPC, leaving it completely full."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass


def pause_forever() -> None:
    print("PAUSED", flush=True)
    while True:
        time.sleep(60)


def describe(store: Path) -> dict[str, list[str]]:
    return {
        "objects": sorted(p.name for p in (store / "sha256").glob("*/*")),
        "tmp": sorted(p.name for p in (store / "tmp").iterdir()),
    }


def main() -> None:
    mode, media_dir, store_dir, wanted_json = sys.argv[1:5]
    wanted = [WantedFile(**w) for w in json.loads(Path(wanted_json).read_text())]
    store = ContentStore(Path(store_dir), workers=1, block_size=BLOCK)
    if mode == "pause":
        target = min(wanted, key=lambda w: w.size).relpath  # copied last: largest go first
        store.ingest(HookedMedia(Path(media_dir), target, pause_forever), wanted)
        raise SystemExit("the hook did not pause")
    if mode == "fill":
        filler = Path(sys.argv[5])
        media = HookedMedia(Path(media_dir), wanted[0].relpath, lambda: fill_disk(filler))
    else:
        media = DirectoryMedia(Path(media_dir))
    outcome: dict[str, object] = {"ok": True}
    try:
        result = store.ingest(media, wanted)
        outcome["files_copied"] = result.files_copied
    except BundleRefused as e:
        outcome = {"ok": False, "error": str(e), "type": type(e).__name__}
    outcome.update(describe(Path(store_dir)))
    print(json.dumps(outcome), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
