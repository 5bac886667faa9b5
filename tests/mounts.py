"""A private mount namespace for tests that mount a small tmpfs (a disk that fills up):
the mount vanishes with the process. Root (as in CI) gets plain `unshare -m`; anyone else a
user namespace (`unshare -rm`), so these tests run, and can fail, either way."""

from __future__ import annotations

import os


def private_mounts() -> list[str]:
    """The command prefix that runs what follows in its own mount namespace."""
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
