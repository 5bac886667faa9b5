"""The provisioning screen driven with Pilot against real playbook runs: localhost into a
scratch appliance_root (set on the inventory's localhost, as IT would), a failure shown
with its task and full message, a check run that succeeds, a cancel that leaves nothing
running, the history with its artifacts paged, and who may do what (11.10(d), (e))."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Select

from appliance.audit.query import EventFilter
from appliance.context import Appliance
from appliance.identity.session import Session
from appliance.provision import proctree, records
from appliance.provision.events import TaskEvent
from appliance.provision.inventory import Host
from appliance.provision.records import RunRecord
from appliance.services import audit, auth, provision, provision_inventory
from tests.conftest import ADMIN, PASSWORD
from tests.provision.kit import live_processes
from tests.tui.pilot import (
    dashboard_ready,
    log_in,
    palette_search,
    run_command,
    settle,
    text_of,
    wait_for,
)
from tui.provision_live import LiveRun, failure_text, host_lines
from tui.screens import provision_runs
from tui.screens.provision import ProvisionScreen
from tui.screens.provision_runs import ArtifactScreen, RunScreen
from tui.widgets.job_status import JobStatus
from tui.widgets.task_list import TaskList

# Real playbook runs are CPU-bound: keep them on the provisioning tests' xdist worker.
pytestmark = pytest.mark.xdist_group("provision")

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
SLEEP = "sleep 3219"


@pytest.fixture
def ivan(make_user) -> Session:
    return make_user(["it"], "ivan", "Ivan Ito")


@pytest.fixture
def root(tmp_path: Path, history: Appliance, ivan: Session) -> Path:
    """An empty appliance_root, set on localhost in the inventory (no extra variables)."""
    path = tmp_path / "root"
    path.mkdir()
    provision_inventory.add_host(history, ivan, Host("localhost", connection="local",
                                                appliance_root=str(path),
                                                python=sys.executable))
    return path


def screen(pilot) -> ProvisionScreen:
    assert isinstance(pilot.app.screen, ProvisionScreen)
    return pilot.app.screen


def status(pilot) -> str:
    return pilot.app.screen.query_one(JobStatus).message


async def open_provisioning(pilot, username: str) -> ProvisionScreen:
    await log_in(pilot, username, PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ProvisionScreen),
                   what="provisioning")
    select = pilot.app.screen.query_one("#prov-playbook", Select)
    await wait_for(pilot, lambda: select.value == "site.yml", what="the playbook list")
    await settle(pilot)
    return screen(pilot)


async def start(pilot, playbook: str, key: str) -> None:
    s = screen(pilot)
    s.query_one("#prov-playbook", Select).value = playbook
    s.query_one("#prov-inventory", Select).value = "local"
    await pilot.pause()
    await pilot.press(key)
    await wait_for(pilot, lambda: s.current is not None, what="the run to start")


async def finished(pilot, timeout: float = 90) -> None:
    await wait_for(pilot, lambda: not screen(pilot).busy, timeout=timeout, what="the run")
    await settle(pilot)


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def events(app: Appliance, action: str) -> list[dict]:
    admin = auth.login(app, ADMIN, PASSWORD)
    return [e.data for e in audit.events(app, admin, EventFilter(action=action), limit=20)]


@pytest.mark.asyncio
async def test_a_failing_verify_run_shows_its_task_and_message_then_its_artifacts(
        make_console, history, root, monkeypatch):
    app = make_console()
    drawn: list[tuple[int, bool]] = []
    original = ProvisionScreen._show_events

    def spy(self, batch):
        drawn.append((len(batch), threading.current_thread() is threading.main_thread()))
        original(self, batch)

    monkeypatch.setattr(ProvisionScreen, "_show_events", spy)
    async with app.run_test(size=(120, 40)) as pilot:
        s = await open_provisioning(pilot, "ivan")
        await start(pilot, "verify.yml", "g")
        await finished(pilot)
        rec = s.current
        assert rec is not None and rec.status == "failed" and rec.mode == "run"
        assert status(pilot).startswith("run verify.yml on local (localhost): failed in ")
        # The live list: every task of the play, each with its result in place.
        table = s.query_one(TaskList)
        live_rows = rows(table)
        assert live_rows[0] == ["", "play", "Report appliance health"]
        listed = {r[2]: r[1] for r in live_rows if r[0] == "localhost"}
        assert listed["Look at the installed pieces"] == "ok"
        assert listed["Read the serving bind address"] == "skipped"
        assert listed["Fail naming what is unhealthy"] == "failed"
        assert "running" not in listed.values()
        assert table.live.done == table.live.total == 6
        assert host_lines(table.live) == \
            "localhost: ok 3, changed 0, failed 1, skipped 2"
        # The failing task's message in full, not the one-line summary.
        failure = text_of(pilot, "#prov-failure")
        assert failure.startswith("FAILED on localhost: Fail naming what is unhealthy\n"
                                  "unhealthy: no active release (")
        assert f"{root}/opt/appliance/current missing" in failure
        assert failure.endswith("; runtime not installed")
        # Events went to the screen in a few batches, all drawn on the UI thread.
        assert drawn and all(on_ui for _, on_ui in drawn)
        assert sum(n for n, _ in drawn) == len(provision.run_events(history, auth.login(
            history, "ivan", PASSWORD), rec.id))
        runs = s.query_one("#prov-runs", DataTable)
        assert rows(runs)[0][1:] == ["ivan", "run", "verify.yml", "local", "failed"]

        # The history: open the run, its replayed task list and its artifacts.
        runs.focus()
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and app.screen.record is not None, what="the run view")
        summary = text_of(pilot, "#run-summary")
        assert summary.startswith("run verify.yml on local (localhost): failed in ")
        assert f"failure: {rec.failure}" in summary
        assert text_of(pilot, "#run-failure") == failure
        # The same rows, rebuilt from the events the run stored.
        assert rows(app.screen.query_one(TaskList)) == live_rows
        artifacts = app.screen.query_one("#run-artifacts", DataTable)
        names = [r[1] for r in rows(artifacts)]
        stdout = f"artifacts/{rec.id}/stdout"
        assert stdout in names and "env/extravars" in names
        assert "/job_events/" not in "".join(names[:names.index(stdout) + 1])

        # An artifact a page at a time.
        monkeypatch.setattr(provision_runs, "PAGE_BYTES", 512)
        whole = (Path(rec.job_dir) / stdout).read_bytes()
        assert len(whole) > 1024
        artifacts.focus()
        artifacts.move_cursor(row=names.index(stdout))
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ArtifactScreen)
                       and app.screen.chunk is not None, what="the artifact")
        assert text_of(pilot, "#art-where") == (
            f"{stdout}: bytes 0-512 of {len(whole):,} (page 1; n: next page)")
        assert text_of(pilot, "#art-text") == whole[:512].decode("utf-8", "replace")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen.chunk.offset == 512, what="page 2")
        assert text_of(pilot, "#art-where").startswith(f"{stdout}: bytes 512-1,024 of ")
        assert text_of(pilot, "#art-text") == whole[512:1024].decode("utf-8", "replace")
        await pilot.press("p")
        await wait_for(pilot, lambda: app.screen.chunk.offset == 0, what="page 1 again")
    started = events(history, "provision.start")[-1]
    ended = events(history, "provision.run")[-1]
    assert started["actor"]["username"] == ended["actor"]["username"] == "ivan"
    assert started["terminal"] == ended["terminal"] == "console-test"
    assert ended["outcome"] == "failure" and ended["reason"] == rec.failure
    assert ended["details"]["playbook"] == "verify.yml"


@pytest.mark.asyncio
async def test_a_check_run_at_80x24_succeeds_and_changes_nothing(make_console, history, root):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_provisioning(pilot, "ivan")
        await start(pilot, "update.yml", "c")
        await finished(pilot)
        rec = s.current
        assert rec.status == "successful" and rec.check
        assert status(pilot).startswith("check update.yml on local (localhost): successful")
        listed = {r[2]: r[1] for r in rows(s.query_one(TaskList))}
        assert listed["release : Say that no release was chosen"] == "ok"
        assert listed["serving : Write the serving unit"] == "changed"  # would change
        assert not s.query_one("#prov-failure-box").display
        assert rows(s.query_one("#prov-runs", DataTable))[0][2:] == [
            "check", "update.yml", "local", "successful"]
    assert list(root.iterdir()) == []   # check mode wrote nothing
    assert events(history, "provision.run")[-1]["details"]["mode"] == "check"


@pytest.fixture
def slow_playbooks(tmp_path: Path, monkeypatch) -> Path:
    """The installed playbooks plus one whose task outlives its parent process."""
    proj = shutil.copytree(PLAYBOOKS, tmp_path / "playbooks")
    (proj / "slow.yml").write_text(
        "- name: Sleep\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - name: Sleep in a grandchild\n      ansible.builtin.shell: \"{SLEEP} & {SLEEP}\"\n"
        "      changed_when: false\n")
    monkeypatch.setenv(provision.PLAYBOOKS_ENV, str(proj))
    return proj


@pytest.mark.asyncio
async def test_cancel_stops_the_run_and_every_process_it_started(
        make_console, history, root, slow_playbooks):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_provisioning(pilot, "ivan")
        await start(pilot, "slow.yml", "g")
        table = s.query_one(TaskList)
        await wait_for(pilot, lambda: ["localhost", "running", "Sleep in a grandchild"]
                       in rows(table) and len(live_processes(SLEEP)) >= 2, timeout=60,
                       what="the sleeping task")
        await pilot.press("x")
        await finished(pilot, timeout=30)
        rec = s.current
        assert rec.status == "cancelled"
        assert status(pilot).startswith("run slow.yml on local (localhost): cancelled")
        assert text_of(pilot, "#prov-failure") == "Stopped: cancelled by request"
        # The task that never reported a result says how it ended.
        assert rows(table)[-1] == ["localhost", "cancelled", "Sleep in a grandchild"]
        assert rows(s.query_one("#prov-runs", DataTable))[0][-1] == "cancelled"
    assert live_processes(SLEEP) == [] and proctree.run_processes(rec.id) == set()
    cancel = events(history, "provision.cancel")[-1]
    assert cancel["actor"]["username"] == "ivan"
    assert cancel["reason"] == "cancelled at the console"
    assert events(history, "provision.run")[-1]["details"]["status"] == "cancelled"


@pytest.mark.asyncio
async def test_only_it_runs_playbooks_others_see_the_history_or_nothing(
        make_console, history, make_user):
    make_user(["ml"], "mia")
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_provisioning(pilot, "audrey")   # an auditor reads the history
        await pilot.press("g")                          # not offered: nothing happens
        await settle(pilot)
        assert not s.busy and events(history, "access.denied") == []
        s.action_run()                                  # past the console: the service
        await wait_for(pilot, lambda: status(pilot).startswith("error:"), what="refusal")
        assert status(pilot) == ("error: audrey may not provision.run (needs role: it) "
                                 "(ask a user with the required role; the denial was "
                                 "recorded)")
        assert not s.busy and s.current is None
    denied = events(history, "access.denied")[-1]
    assert denied["actor"]["username"] == "audrey"
    assert denied["details"]["permission"] == "provision.run"
    assert events(history, "provision.start") == []
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "mia", PASSWORD)
        await dashboard_ready(pilot)
        await pilot.press("p")
        await pilot.pause()
        assert not isinstance(app.screen, ProvisionScreen)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = await palette_search(pilot, "provisioning")
        assert all("Provisioning" not in str(palette.get_option_at_index(i).prompt)
                   for i in range(palette.option_count))


@pytest.mark.asyncio
async def test_the_command_palette_opens_provisioning(make_console, history, ivan):
    app = make_console()
    async with app.run_test(size=(80, 24)) as pilot:
        await log_in(pilot, "ivan", PASSWORD)
        await dashboard_ready(pilot)
        await run_command(pilot, "provisioning")
        await wait_for(pilot, lambda: isinstance(app.screen, ProvisionScreen))


def ev(seq: int, kind: str, task: str, message: str = "", host: str = "h1") -> TaskEvent:
    return TaskEvent(seq, kind, host, task, "", "", message, seq, 10)


def test_live_run_bounds_its_rows_but_keeps_failures_and_counts():
    live = LiveRun(max_rows=3)
    added, changed = live.fold([ev(1, "started", "a"), ev(2, "ok", "a")])
    assert [r.result for r in added] == ["ok"] and changed[0].key == added[0].key
    live.fold([ev(3, "changed", "b"), ev(4, "skipped", "c"), ev(5, "ok", "d")])
    assert len(live.rows) == 3 and live.dropped == 1
    long = "Traceback (most recent call last):\n" + "x" * 2000
    added, _ = live.fold([ev(6, "failed", "e", long)])
    assert [r.result for r in added] == ["failed"]      # a failure always gets its row
    assert failure_text(live.failures) == f"FAILED on h1: e\n{long}"
    assert host_lines(live) == ("h1: ok 2, changed 1, failed 1, skipped 1\n"
                                "(1 results not listed; every one is in the run's artifacts)")
    live.fold([ev(7, "started", "f", host="h2")])
    assert host_lines(live).endswith("h2: ok 0, changed 0, failed 0, skipped 0; now f\n"
                                     "(1 results not listed; every one is in the run's "
                                     "artifacts)")
    assert [r.result for r in live.close("timeout")] == []   # past the bound: no row
    assert "now f" not in host_lines(live)
    assert failure_text([], "the run took longer than 9 s", "timeout") == \
        "Stopped: the run took longer than 9 s"


# -- snapshots: the screen over a fixed history (two stored runs, no live run) ----------

def fixed_runs(app: Appliance, home: Path) -> None:
    """Two finished runs as the history stores them, with fixed ids, times and results."""
    base = dict(inventory="local", inventory_digest="5e" * 32, hosts_list=("localhost",),
                extra_vars={}, limit=None, started_by="ivan", owner_host="console-test",
                owner_pid=1, owner_start=None)
    runs = [
        RunRecord(id="20260115T083000-0a1b2c", playbook="site.yml", check=True,
                  status="successful", rc=0, started_at="2026-01-15T08:30:00.000Z",
                  finished_at="2026-01-15T08:31:12.000Z", duration_s=72.4,
                  hosts={"localhost": {"ok": 41, "changed": 9, "failed": 0, "skipped": 12,
                                       "unreachable": 0}}, failure=None,
                  job_dir=str(home / "jobs" / "provision-20260115T083000-0a1b2c"), **base),
        RunRecord(id="20260115T084500-3d4e5f", playbook="verify.yml", check=False,
                  status="failed", rc=2, started_at="2026-01-15T08:45:00.000Z",
                  finished_at="2026-01-15T08:45:04.000Z", duration_s=3.9,
                  hosts={"localhost": {"ok": 3, "changed": 0, "failed": 1, "skipped": 2,
                                       "unreachable": 0}},
                  failure="localhost: Fail naming what is unhealthy: unhealthy: serving unit "
                          "missing", job_dir=str(home / "jobs" / "gone"), **base),
    ]
    with app.transaction():
        for rec in runs:
            records.insert(app.conn, rec)


async def _provisioning(pilot) -> None:
    await open_provisioning(pilot, "ivan")
    runs = pilot.app.screen.query_one("#prov-runs", DataTable)
    await wait_for(pilot, lambda: runs.row_count == 2, what="the history")
    await settle(pilot)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_provisioning_screen_with_history(snap_compare, make_console, history, ivan, home,
                                          size):
    fixed_runs(history, home)
    assert snap_compare(make_console(), terminal_size=size, run_before=_provisioning)


@pytest.mark.asyncio
async def test_next_page_pressed_twice_quickly_moves_two_pages_and_back_again(
        make_console, history, root, ivan, monkeypatch):
    """n n before the first page arrives: pages 2 then 3, and p p back to 1 (both used to
    read page 2, call it page 3, and lead p back to page 1 twice)."""
    rec = provision.start(history, ivan, provision.RunRequest("verify.yml", "local"),
                          lambda batch: None).wait()
    stdout = f"artifacts/{rec.id}/stdout"
    assert (Path(rec.job_dir) / stdout).stat().st_size > 1536
    monkeypatch.setattr(provision_runs, "PAGE_BYTES", 512)
    # Each page is read after a short hold, as on a busy disk: the keys come first.
    held = threading.Semaphore(0)
    real = provision.read_artifact

    def slow(*args, **kwargs):
        held.acquire(timeout=10)
        return real(*args, **kwargs)

    app = make_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_provisioning(pilot, "ivan")
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and app.screen.record is not None, what="the run view")
        artifacts = app.screen.query_one("#run-artifacts", DataTable)
        artifacts.focus()
        artifacts.move_cursor(row=[r[1] for r in rows(artifacts)].index(stdout))
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ArtifactScreen)
                       and app.screen.chunk is not None, what="page 1")
        page = app.screen
        monkeypatch.setattr(provision, "read_artifact", slow)
        await pilot.press("n", "n")
        held.release()
        await wait_for(pilot, lambda: page.chunk.offset == 512, what="page 2")
        await pilot.press("n")
        held.release()
        await wait_for(pilot, lambda: page.chunk.offset == 1024, what="page 3")
        assert "(page 3;" in text_of(pilot, "#art-where")
        await pilot.press("p", "p")
        held.release()
        await wait_for(pilot, lambda: page.chunk.offset == 512, what="page 2 again")
        await pilot.press("p")
        held.release()
        await wait_for(pilot, lambda: page.chunk.offset == 0, what="page 1 again")
        assert page.starts == [] and "(page 1;" in text_of(pilot, "#art-where")

