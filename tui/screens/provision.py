"""Provisioning: choose a playbook and inventory, check (changes nothing) or run it, follow
it task by task per host, cancel it, and browse the history of runs with their artifacts.

The run belongs to the provisioning service's own thread. Its event callback only appends
to a buffer (the runner must never wait for the screen); a worker hands the buffer to the
UI thread with `call_from_thread` at most five times a second, and once more at the end.
Leaving the screen leaves the run going: the history shows it and can cancel it.
"""

from __future__ import annotations

import threading
import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Select, Static
from textual.worker import get_current_worker

from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.provision.events import TaskEvent
from appliance.provision.inventory import INVENTORIES
from appliance.provision.records import RunRecord
from appliance.services import provision, provision_inventory
from tui.provision_live import failure_text, history_row, host_lines, run_title
from tui.widgets.job_status import JobStatus
from tui.widgets.tables import fill_table
from tui.widgets.task_list import TaskList

UI_INTERVAL_S = 0.2   # the screen redraws a run at most five times a second
HISTORY = 50          # runs listed; older ones stay in `appliance provision runs --before`
CANCEL_REASON = "cancelled at the console"
RUN_COLUMNS = ("started (UTC)", "by", "mode", "playbook", "inv", "status")


class _Feed:
    """Events from the runner thread, buffered until the worker hands them over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[TaskEvent] = []

    def add(self, batch: list[TaskEvent]) -> None:   # runner thread: cheap, never blocks
        with self._lock:
            self._events.extend(batch)

    def take(self) -> list[TaskEvent]:
        with self._lock:
            batch, self._events = self._events, []
        return batch


class ProvisionScreen(Screen):
    BINDINGS = [
        Binding("c", "check", "Check"),
        Binding("g", "run", "Run"),
        Binding("x", "cancel_run", "Cancel run"),
        Binding("o", "open_run", "Open run"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, playbooks: list[str], hosts: list[str], runs: list[RunRecord]
                     ) -> None:
            super().__init__()
            self.playbooks, self.hosts, self.runs = playbooks, hosts, runs

    class History(Message):
        def __init__(self, runs: list[RunRecord]) -> None:
            super().__init__()
            self.runs = runs

    class Started(Message):
        def __init__(self, record: RunRecord) -> None:
            super().__init__()
            self.record = record

    class Finished(Message):
        def __init__(self, record: RunRecord) -> None:
            super().__init__()
            self.record = record

    class Failed(Message):
        def __init__(self, error: ApplianceError, undone: str = "") -> None:
            super().__init__()
            self.error, self.undone = error, undone

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunRecord] = {}
        self.current: RunRecord | None = None   # the run this screen started and follows
        self.busy = False                        # starting or following a run

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="prov-controls"):
            yield Label("Playbook ")
            yield Select([], id="prov-playbook", compact=True, allow_blank=True,
                         prompt="(loading)")
            yield Label(" Inventory ")
            yield Select([(name, name) for name in INVENTORIES], id="prov-inventory",
                         compact=True, allow_blank=False, value="local")
            yield Button("Check", id="prov-check", compact=True)
            yield Button("Run", id="prov-run", compact=True, variant="warning")
            yield Button("Cancel", id="prov-cancel", compact=True, variant="error")
        yield JobStatus(id="prov-status")
        yield Static("", id="prov-hosts", markup=False)
        yield TaskList(id="prov-tasks")
        with VerticalScroll(id="prov-failure-box"):
            yield Static("", id="prov-failure", markup=False)
        yield Label("Runs (newest first; o or Enter opens one with its artifacts)",
                    id="prov-runs-title")
        table = DataTable(id="prov-runs", cursor_type="row", zebra_stripes=True)
        table.add_columns(*RUN_COLUMNS)
        yield table
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Check, Run and Cancel are offered to those who run playbooks (hospital IT);
        the others read the history. The service decides anyway."""
        if action in ("check", "run", "cancel_run"):
            return self.app.may("provision.run")
        return True

    def on_mount(self) -> None:
        runs = self.app.may("provision.run")
        for button in ("#prov-check", "#prov-run", "#prov-cancel"):
            self.query_one(button).display = runs
        self.query_one(JobStatus).say(
            "Choose a playbook and inventory; c checks (changes nothing), g runs for real."
            if runs else "The history of provisioning runs (running them needs role it).")
        self.query_one("#prov-failure-box").display = False
        self.query_one("#prov-hosts").display = False
        self._load(self.app.session)

    # -- helpers ------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        return self.app.session

    def say(self, text: str, kind: str = "info") -> None:
        self.query_one(JobStatus).say(text, kind)

    def selected_run(self) -> RunRecord | None:
        table = self.query_one("#prov-runs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return self.runs.get(str(key.value))

    def request(self, check: bool) -> provision.RunRequest | None:
        playbook = self.query_one("#prov-playbook", Select).value
        inventory = self.query_one("#prov-inventory", Select).value
        if not isinstance(playbook, str) or not isinstance(inventory, str):
            return None
        return provision.RunRequest(playbook, inventory, check)

    def show_failure(self, text: str) -> None:
        self.query_one("#prov-failure", Static).update(text)
        self.query_one("#prov-failure-box").display = bool(text)

    # -- actions ------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = {"prov-check": "check", "prov-run": "run",
                  "prov-cancel": "cancel_run"}[event.button.id or ""]
        if self.check_action(action, ()):
            getattr(self, f"action_{action}")()

    def action_check(self) -> None:
        self._begin(check=True)

    def action_run(self) -> None:
        self._begin(check=False)

    def _begin(self, check: bool) -> None:
        if self.busy:
            self.say("a run is in progress here: wait for it or cancel it (x)", "error")
            return
        req = self.request(check)
        if req is None:
            self.say("choose a playbook first", "error")
            return
        self.busy = True
        self.current = None
        self.query_one(TaskList).reset()
        self.query_one("#prov-hosts", Static).update("")
        self.show_failure("")
        mode = "checking" if check else "running"
        self.query_one(JobStatus).start(f"{mode} {req.playbook} on {req.inventory}…")
        self._run(self.session, req)

    def action_cancel_run(self) -> None:
        target = self.current if self.current is not None and self.busy else None
        if target is None:
            chosen = self.selected_run()
            target = chosen if chosen is not None and chosen.status == "running" else None
        if target is None:
            self.say("no run in progress to cancel", "error")
            return
        self.say(f"cancelling run {target.id}…")
        self._cancel(self.session, target.id)

    def action_open_run(self) -> None:
        rec = self.selected_run()
        if rec is not None:
            from tui.screens.provision_runs import RunScreen
            self.app.push_screen(RunScreen(rec.id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "prov-runs":
            event.stop()
            self.action_open_run()

    def on_screen_resume(self) -> None:
        if self.is_mounted and self.app.session is not None:
            self._history(self.app.session)

    # -- workers ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="provision-load")
    def _load(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                playbooks = provision.list_playbooks(app, session)
                hosts = [h.name for h in provision_inventory.list_hosts(app, session)]
                runs = provision.list_runs(app, session, HISTORY)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(playbooks, hosts, runs))

    @work(thread=True, exclusive=True, group="provision-history")
    def _history(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                runs = provision.list_runs(app, session, HISTORY)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.History(runs))

    @work(thread=True, exclusive=True, group="provision-run")
    def _run(self, session: Session, req: provision.RunRequest) -> None:
        worker = get_current_worker()
        feed = _Feed()
        try:
            with self.app.ctx.open() as app:
                handle = provision.start(app, session, req, feed.add)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, "nothing was run"))
            return
        self.post_message(self.Started(handle.record))
        while not handle.join(UI_INTERVAL_S):
            if worker.is_cancelled:
                return  # the screen went away; the run goes on and the history has it
            self._hand_over(feed.take())
        self._hand_over(feed.take())
        try:
            record = handle.wait()
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, "the run's result could not be recorded"))
            return
        self.post_message(self.Finished(record))

    def _hand_over(self, batch: list[TaskEvent]) -> None:
        if batch:
            try:
                self.app.call_from_thread(self._show_events, batch)
            except RuntimeError:
                pass  # the app stopped; nothing left to draw on

    @work(thread=True, exclusive=True, group="provision-cancel")
    def _cancel(self, session: Session, run_id: str) -> None:
        try:
            with self.app.ctx.open() as app:
                provision.cancel(app, session, run_id, CANCEL_REASON)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        if not (self.busy and self.current is not None and self.current.id == run_id):
            # Not followed here: the history shows when it has stopped.
            time.sleep(UI_INTERVAL_S)
            self._history(session)

    # -- results (UI thread) ------------------------------------------------------------

    def _show_events(self, batch: list[TaskEvent]) -> None:
        tasks = self.query_one(TaskList)
        tasks.feed(batch)
        live = tasks.live
        hosts = self.query_one("#prov-hosts", Static)
        hosts.update(host_lines(live))
        hosts.display = bool(live.hosts)
        if live.total:
            self.query_one(JobStatus).progress(live.done, live.total)
        if live.failures:
            self.show_failure(failure_text(live.failures))

    def on_provision_screen_loaded(self, msg: Loaded) -> None:
        select = self.query_one("#prov-playbook", Select)
        select.set_options([(name, name) for name in msg.playbooks])
        if msg.playbooks:
            select.value = "site.yml" if "site.yml" in msg.playbooks else msg.playbooks[0]
        if len(msg.hosts) > 1:
            self.query_one("#prov-inventory", Select).value = "cluster"
        self.on_provision_screen_history(self.History(msg.runs))

    def on_provision_screen_history(self, msg: History) -> None:
        table = self.query_one("#prov-runs", DataTable)
        keep = self.selected_run()
        self.runs = {r.id: r for r in msg.runs}
        fill_table(table, RUN_COLUMNS, [(r.id, history_row(r)) for r in msg.runs])
        if keep is not None and keep.id in self.runs:
            table.move_cursor(row=table.get_row_index(keep.id))

    def on_provision_screen_started(self, msg: Started) -> None:
        self.current = msg.record
        self.query_one(JobStatus).say(
            f"{msg.record.mode} {msg.record.playbook} on {msg.record.inventory} "
            f"({', '.join(msg.record.targets)}): running, run {msg.record.id}")
        self._history(self.session)

    def on_provision_screen_finished(self, msg: Finished) -> None:
        rec = msg.record
        self.busy = False
        self.current = rec
        tasks = self.query_one(TaskList)
        tasks.close(rec.status)
        self.query_one("#prov-hosts", Static).update(host_lines(tasks.live))
        ok = rec.status == "successful"
        self.query_one(JobStatus).finish(f"{run_title(rec)} (run {rec.id})",
                                         "ok" if ok else "error")
        if not ok:
            self.show_failure(failure_text(tasks.live.failures, rec.failure, rec.status))
        self._history(self.session)

    def on_provision_screen_failed(self, msg: Failed) -> None:
        if self.app.session_error(msg.error, msg.undone):
            return
        if msg.undone:   # the run itself: refused before it started, or not recorded
            self.busy = False
            self.query_one(JobStatus).finish(f"error: {msg.error}", "error")
        else:
            self.say(f"error: {msg.error}", "error")
