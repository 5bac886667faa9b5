"""Virtual scrolling: the audit screen opens on a large trail as fast as on a small one.

The trail is built once per module through the real write path (`trail.append`, one
transaction). 200,000 events keep the suite quick; `tests/perf/bench_console.py` measures 1,000,000.

The test bounds the CPU time the console spends (all its threads: the UI and its database
workers), not the wall-clock time: on a CI machine shared with another test worker the
wall clock measured the neighbours too (0.4 s alone, 0.9-1.6 s under load, for the same
0.3 s of CPU). Loading the whole trail instead of pages costs seconds of CPU, loaded or not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from appliance.audit import lookup
from appliance.audit.events import Actor, Event
from appliance.hardware import GpuInventory
from appliance.services.setup import init_appliance
from tests.conftest import ADMIN, ADMIN_NAME, FAST, PASSWORD, SteppingClock
from tests.tui.pilot import audit_ready, dashboard_ready, filter_events, log_in, wait_for
from tui.app import build_app
from tui.widgets.event_list import CACHE_PAGES

pytestmark = pytest.mark.asyncio
ACTORS = (Actor("itops", "Ira Tech", "it"), Actor("mleng", "Mina Learner", "ml"),
          Actor("auditor", "Ada Auditor", "auditor"), Actor("alice", ADMIN_NAME, "admin"))


class NoDriver:
    """The hardware edge: a host without an NVIDIA driver."""

    def read(self) -> GpuInventory:
        return GpuInventory(driver_found=False)


def build_trail(home: Path, events: int, indexed: bool = True) -> Path:
    """`indexed`: the filter lookup brought up to date afterwards, as a running appliance's
    readers (the console, exports) keep it."""
    app = init_appliance(home, ADMIN, ADMIN_NAME, PASSWORD, clock=SteppingClock(),
                         settings=FAST, terminal="bulk")
    with app.transaction():
        for i in range(events):
            app.trail.append(Event(
                action=("update.import", "model.evaluate", "auth.login", "audit.verify")[i % 4],
                actor=ACTORS[i % 4], target_type="bundle", target_id=f"bundle-{i % 97}",
                details={"n": i}, terminal="bulk"))
    if indexed:
        lookup.refresh(app.conn)
    app.close()
    return home


async def open_and_measure(home: Path) -> dict[str, float]:
    app = build_app(home, SteppingClock(), terminal="console-test", gpu_source=NoDriver())
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, ADMIN, PASSWORD)
        await dashboard_ready(pilot)
        start, cpu = time.perf_counter(), time.process_time()
        await pilot.press("a")
        events = await audit_ready(pilot)
        opened = time.perf_counter() - start
        opened_cpu = time.process_time() - cpu
        total = len(events.view)

        start, cpu = time.perf_counter(), time.process_time()
        await pilot.press("end")
        await wait_for(pilot, lambda: events.current is not None and events.current.event.seq == 1,
                       what="oldest event")
        to_end = time.perf_counter() - start
        to_end_cpu = time.process_time() - cpu
        assert len(events._cache) <= CACHE_PAGES  # pages, never the table

        start = time.perf_counter()
        await filter_events(pilot, events, "actor", "mleng")
        await wait_for(pilot, lambda: events.current is not None, what="a current row")
        filtered = time.perf_counter() - start
        assert events.current.data["actor"]["username"] == "mleng"
        assert len(events.view) == total // 4 or abs(len(events.view) - total // 4) <= 1
    return {"events": total, "open_s": opened, "jump_to_end_s": to_end, "filter_s": filtered,
            "open_cpu_s": opened_cpu, "jump_to_end_cpu_s": to_end_cpu}


@pytest.fixture(scope="module")
def trail_200k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_trail(tmp_path_factory.mktemp("big") / "home", 200_000)


async def test_audit_screen_opens_on_200k_events_under_a_second(trail_200k: Path):
    figures = await open_and_measure(trail_200k)
    print(json.dumps({"bench": "tui_audit_open", **figures}))
    assert figures["events"] >= 200_000
    assert figures["open_cpu_s"] < 1.0
    assert figures["jump_to_end_cpu_s"] < 1.0
