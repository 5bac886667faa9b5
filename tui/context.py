"""How the console reaches its appliance: home, clock, terminal and the GPU edge.

Each worker thread opens its own `Appliance` (its own SQLite connection, under a
millisecond) so a long export or verify never shares a transaction with anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.clock import Clock
from appliance.context import Appliance, default_terminal
from appliance.demo import demo_logins
from appliance.hardware import GpuSource, read_inventory
from appliance.home import HomeLayout


@dataclass
class ConsoleContext:
    home: Path
    clock: Clock
    terminal: str
    appliance_id: str
    idle_minutes: int = 15
    gpu_source: GpuSource | None = None
    demo_logins: tuple[tuple[str, str], ...] = ()   # (username, password): the demo only

    @classmethod
    def load(cls, home: Path, clock: Clock | None = None, terminal: str | None = None,
             gpu_source: GpuSource | None = None) -> ConsoleContext:
        """Check the home holds an appliance before any screen opens (fails with its message)."""
        clock = clock or Clock()
        terminal = terminal or f"console@{default_terminal()}"
        with Appliance.open(Path(home), clock=clock, terminal=terminal) as app:
            logins = tuple((u.username, u.password) for u in demo_logins(app))
            return cls(Path(home), clock, terminal, app.appliance_id,
                       app.settings.session.idle_minutes, gpu_source, logins)

    def open(self) -> Appliance:
        """A fresh connection for the calling thread; use as a context manager."""
        return Appliance.open(self.home, clock=self.clock, terminal=self.terminal)

    @property
    def exports_dir(self) -> Path:
        return HomeLayout(self.home).exports

    def gpu_summary(self) -> str:
        return read_inventory(self.gpu_source).summary()
