"""One provisioning run from the history: its summary, its task list replayed from the
stored job events, the failure in full, its artifacts, and an artifact's text a page at a
time (artifacts can be megabytes: only one page is ever held by a widget)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.provision.artifacts import ArtifactChunk, ArtifactInfo
from appliance.provision.events import TaskEvent
from appliance.provision.records import RunRecord
from appliance.services import provision
from tui.provision_live import artifact_order, failure_text, run_summary
from tui.widgets.tables import fill_table
from tui.widgets.task_list import TaskList
from tui.widgets.transfer import human_bytes

PAGE_BYTES = 16 * 1024   # one artifact page on screen
ARTIFACT_COLUMNS = ("size", "file")


class RunScreen(Screen):
    BINDINGS = [
        Binding("a", "focus_artifacts", "Artifacts"),
        Binding("v", "view_artifact", "View artifact"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    class Loaded(Message):
        def __init__(self, record: RunRecord, events: list[TaskEvent],
                     artifacts: list[ArtifactInfo]) -> None:
            super().__init__()
            self.record, self.events, self.artifacts = record, events, artifacts

    class Failed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.record: RunRecord | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"run {self.run_id}: loading…", id="run-summary", markup=False)
        yield TaskList(id="run-tasks")
        with VerticalScroll(id="run-failure-box"):
            yield Static("", id="run-failure", markup=False)
        yield Label("Artifacts (Enter or v shows one)", id="run-artifacts-title")
        table = DataTable(id="run-artifacts", cursor_type="row", zebra_stripes=True)
        table.add_columns(*ARTIFACT_COLUMNS)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#run-failure-box").display = False
        self._load(self.app.session)

    @work(thread=True, exclusive=True, group="provision-run-view")
    def _load(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                rec = provision.get_run(app, session, self.run_id)
                events = provision.run_events(app, session, self.run_id)
                files = provision.list_artifacts(app, session, self.run_id)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(rec, events, files))

    def on_run_screen_loaded(self, msg: Loaded) -> None:
        self.record = msg.record
        self.query_one("#run-summary", Static).update(run_summary(msg.record))
        rec = msg.record
        tasks = self.query_one(TaskList)
        tasks.feed(msg.events)
        if rec.finished:
            tasks.close(rec.status)
        text = failure_text(tasks.live.failures,
                            rec.failure if rec.status != "successful" else None, rec.status)
        self.query_one("#run-failure", Static).update(text)
        self.query_one("#run-failure-box").display = bool(text)
        table = self.query_one("#run-artifacts", DataTable)
        fill_table(table, ARTIFACT_COLUMNS, [
            (a.name, (human_bytes(a.size), a.name))
            for a in sorted(msg.artifacts, key=lambda a: artifact_order(a.name))])
        if not msg.artifacts:
            self.query_one("#run-artifacts-title", Label).update(
                "Artifacts: none kept for this run")

    def on_run_screen_failed(self, msg: Failed) -> None:
        if not self.app.session_error(msg.error):
            self.query_one("#run-summary", Static).update(f"error: {msg.error}")

    def selected_artifact(self) -> str | None:
        table = self.query_one("#run-artifacts", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_focus_artifacts(self) -> None:
        self.query_one("#run-artifacts", DataTable).focus()

    def action_view_artifact(self) -> None:
        name = self.selected_artifact()
        if name is not None:
            self.app.push_screen(ArtifactScreen(self.run_id, name))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "run-artifacts":
            event.stop()
            self.action_view_artifact()


class ArtifactScreen(Screen):
    """One artifact's text, PAGE_BYTES at a time: n next page, p previous page."""

    BINDINGS = [
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Previous page"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    class Page(Message):
        def __init__(self, chunk: ArtifactChunk) -> None:
            super().__init__()
            self.chunk = chunk

    class Failed(Message):
        def __init__(self, error: ApplianceError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, run_id: str, name: str, page_bytes: int | None = None) -> None:
        super().__init__()
        self.run_id, self.artifact = run_id, name
        self.page_bytes = page_bytes or PAGE_BYTES
        self.chunk: ArtifactChunk | None = None
        self.starts: list[int] = []    # offsets of the pages shown before this one
        # A page is on its way: n and p wait for it (pressed twice quickly, both read the
        # page after the shown one, and the page count and the way back went wrong).
        self.reading = True

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"{self.artifact}: loading…", id="art-where", markup=False)
        with VerticalScroll(id="art-box"):
            yield Static("", id="art-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._read(self.app.session, 0)

    def action_next_page(self) -> None:
        if not self.reading and self.chunk is not None and self.chunk.next_offset is not None:
            self.starts.append(self.chunk.offset)
            self.reading = True
            self._read(self.app.session, self.chunk.next_offset)

    def action_previous_page(self) -> None:
        if not self.reading and self.starts:
            self.reading = True
            self._read(self.app.session, self.starts.pop())

    @work(thread=True, exclusive=True, group="provision-artifact")
    def _read(self, session: Session, offset: int) -> None:
        try:
            with self.app.ctx.open() as app:
                chunk = provision.read_artifact(app, session, self.run_id, self.artifact, offset,
                                                self.page_bytes)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Page(chunk))

    def on_artifact_screen_page(self, msg: Page) -> None:
        self.reading = False
        c = self.chunk = msg.chunk
        end = c.next_offset if c.next_offset is not None else c.size
        page = len(self.starts) + 1
        more = "n: next page" if c.next_offset is not None else "end of file"
        back = ", p: previous" if self.starts else ""
        self.query_one("#art-where", Static).update(
            f"{self.artifact}: bytes {c.offset:,}-{end:,} of {c.size:,} (page {page}; "
            f"{more}{back})")
        self.query_one("#art-text", Static).update(c.text or "(empty)")
        self.query_one("#art-box", VerticalScroll).scroll_home(animate=False)

    def on_artifact_screen_failed(self, msg: Failed) -> None:
        self.reading = False
        if not self.app.session_error(msg.error):
            self.query_one("#art-where", Static).update(f"error: {msg.error}")
