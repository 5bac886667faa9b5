"""Where an appliance keeps its state, and the layout inside that directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

ENV_VAR = "APPLIANCE_HOME"
SYSTEM_HOME = Path("/var/lib/appliance")
# What `appliance init` writes in the home (with SQLite's and the settings' side files): all
# an interrupted init can leave behind.
INIT_NAMES = ("keys", "appliance.db", "appliance.db-wal", "appliance.db-shm",
              "appliance.db-journal", "config.json", "config.json.tmp")


def default_home() -> Path:
    """`APPLIANCE_HOME`, else /var/lib/appliance for root, else the user's data dir."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_HOME
    return Path(platformdirs.user_data_dir("appliance", appauthor=False))


@dataclass(frozen=True)
class HomeLayout:
    """Every path the appliance uses, derived from one root so tests run in a temp dir."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "appliance.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys / "appliance-signing.pem"

    @property
    def public_key(self) -> Path:
        return self.keys / "appliance-signing.pub.pem"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def exists(self) -> bool:
        """Whether an appliance was made here: its database is. (A missing signing key is
        then damage, said as such when the appliance is opened, not "no appliance".)"""
        return self.db.exists()

    def init_leftovers(self) -> list[Path]:
        """The paths of `INIT_NAMES` present in the home."""
        return [self.root / n for n in INIT_NAMES
                if os.path.lexists(self.root / n)]

    def remove_leftovers_hint(self) -> str:
        """What to do about a home an interrupted `appliance init` left half-made."""
        paths = [str(p) for p in self.init_leftovers()]
        listed = ", ".join(paths[:-1]) + " and " + paths[-1] if len(paths) > 1 else "".join(paths)
        return f"remove {listed or 'the home'}, then run `appliance init` again"
