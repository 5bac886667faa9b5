"""The audit trail: a virtual list, filters, the selected event in full, verify and export.

Everything that touches the database runs in a thread worker and reports back with a
message; export progress is marshalled to the UI with `call_from_thread`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from appliance.audit.query import EventFilter
from appliance.audit.verify import VerifyReport
from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.services import audit, audit_export
from appliance.services.audit_export import ExportResult
from tui.screens.export import ExportDialog, ExportRequest
from tui.trail_view import TrailView
from tui.widgets.event_detail import EventDetail
from tui.widgets.event_list import EventList
from tui.widgets.filter_bar import FilterBar
from tui.widgets.job_status import JobStatus


def describe_filter(flt: EventFilter) -> str:
    parts = [f"{k}={v}" for k, v in vars(flt).items() if v]
    return "all events" if not parts else "events with " + ", ".join(parts)


def describe_view(view: TrailView) -> str:
    order = "newest first" if view.descending else "oldest first"
    what = describe_filter(view.flt).removeprefix("all ")
    return f"{len(view):,} {what}, {order}"


def verify_text(report: VerifyReport) -> tuple[str, str]:
    if report.ok:
        return (f"Chain OK: {report.events_checked:,} events and "
                f"{report.checkpoints_checked} checkpoint(s) verified, head seq "
                f"{report.head_seq:,}", "ok")
    first = report.first_finding
    where = "" if report.first_bad_seq is None else f" at seq {report.first_bad_seq}"
    return (f"Chain FAILED{where}: "
            f"{', '.join(sorted(report.kinds()))} ({first.message})", "error")


class AuditScreen(Screen):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("ctrl+x", "clear_filter", "Clear filter", show=False),
        Binding("o", "toggle_order", "Order"),
        Binding("v", "verify", "Verify"),
        Binding("e", "export", "Export"),
    ]

    class ViewReady(Message):
        def __init__(self, view: TrailView, keep_seq: int | None) -> None:
            super().__init__()
            self.view, self.keep_seq = view, keep_seq

    class Verified(Message):
        def __init__(self, report: VerifyReport) -> None:
            super().__init__()
            self.report = report

    class Exported(Message):
        def __init__(self, result: ExportResult) -> None:
            super().__init__()
            self.result = result

    class JobFailed(Message):
        def __init__(self, what: str, error: ApplianceError) -> None:
            super().__init__()
            self.what, self.error = what, error

    def __init__(self) -> None:
        super().__init__()
        self.flt = EventFilter()
        self.descending = True
        self.busy: str | None = None
        self._announce = True

    def compose(self) -> ComposeResult:
        yield Header()
        yield FilterBar(id="filters")
        yield Static("", id="columns", markup=False)
        with Container(id="audit-body"):
            yield EventList(self.app.ctx.open, self.app.session, id="events")
            yield EventDetail(id="detail")
        yield JobStatus(id="job")
        yield Footer()

    @property
    def events(self) -> EventList:
        return self.query_one("#events", EventList)

    @property
    def job(self) -> JobStatus:
        return self.query_one("#job", JobStatus)

    def on_mount(self) -> None:
        self.events.focus()
        self.reload()
        self._index(self.app.session)

    @work(thread=True, exclusive=True, group="audit-index")
    def _index(self, session: Session) -> None:
        """Index what appends left unindexed while the user reads, so filters come quick.
        Best effort, so nothing to report, and no failure may end the console: a filter
        indexes for itself, or scans, whatever happened here."""
        try:
            with self.app.ctx.open() as app:
                audit.index(app, session)
        except (ApplianceError, sqlite3.Error, OSError):
            return

    # -- the view --------------------------------------------------------------------

    def reload(self, keep_seq: int | None = None, announce: bool = True) -> None:
        """Load the view for the current filter; `announce` reports it on the status line
        (off after a job, whose result stays there)."""
        self._announce = announce
        if announce:
            self.job.say(f"loading {describe_filter(self.flt)}…")
        self._load_view(self.app.session, self.flt, self.descending, keep_seq)

    @work(thread=True, exclusive=True, group="audit-view")
    def _load_view(self, session: Session, flt: EventFilter, descending: bool,
                   keep_seq: int | None) -> None:
        try:
            with self.app.ctx.open() as app:
                view = TrailView.load(app, session, flt, descending)
        except ApplianceError as exc:
            self.post_message(self.JobFailed("loading", exc))
            return
        self.post_message(self.ViewReady(view, keep_seq))

    def on_audit_screen_view_ready(self, message: ViewReady) -> None:
        view = message.view
        if view.flt != self.flt or view.descending != self.descending:
            return  # superseded by a newer filter
        self.events.show(view, message.keep_seq)
        self._update_columns()
        if self._announce and self.busy is None:
            self.job.say(describe_view(view))
        if len(view) == 0:
            self.query_one(EventDetail).show(None)

    def _update_columns(self) -> None:
        self.query_one("#columns", Static).update(self.events.columns.header())

    def on_resize(self) -> None:
        self.call_after_refresh(self._update_columns)

    def on_event_list_columns_fitted(self, _message: EventList.ColumnsFitted) -> None:
        self._update_columns()

    def on_event_list_highlighted(self, message: EventList.Highlighted) -> None:
        self.query_one(EventDetail).show(message.row)

    def on_event_list_load_failed(self, message: EventList.LoadFailed) -> None:
        if not self.app.session_error(message.error):
            self.job.say(str(message.error), "error")

    def on_filter_bar_changed(self, message: FilterBar.Changed) -> None:
        self.flt = message.flt
        self.events.focus()
        self.reload()

    def on_filter_bar_invalid(self, message: FilterBar.Invalid) -> None:
        self.job.say(message.message, "error")

    def action_focus_filter(self) -> None:
        self.query_one("#filter-actor", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).clear()

    def action_toggle_order(self) -> None:
        self.descending = not self.descending
        current = self.events.current
        self.reload(current.event.seq if current else None)

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.events.focus()
        else:
            self.app.pop_screen()

    # -- verify ----------------------------------------------------------------------

    def action_verify(self) -> None:
        if self.busy:
            self.job.say(f"wait: {self.busy} is still running", "error")
            return
        self.busy = "verify"
        self.job.start("verifying the whole chain…")
        self._verify(self.app.session)

    @work(thread=True, exclusive=True, group="audit-job")
    def _verify(self, session: Session) -> None:
        try:
            with self.app.ctx.open() as app:
                report = audit.verify(app, session)
        except ApplianceError as exc:
            self.post_message(self.JobFailed("verify", exc))
            return
        self.post_message(self.Verified(report))

    def on_audit_screen_verified(self, message: Verified) -> None:
        self.busy = None
        text, kind = verify_text(message.report)
        self.job.finish(text, kind)
        self._reload_keeping_cursor()

    # -- export ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Verify and Export are offered to those who hold them (the service decides
        anyway): an ml user used to fill in the whole export dialog before the refusal."""
        needs = {"verify": "audit.verify", "export": "audit.export"}.get(action)
        return needs is None or self.app.may(needs)

    def action_export(self) -> None:
        if self.busy:
            self.job.say(f"wait: {self.busy} is still running", "error")
            return
        self.app.push_screen(ExportDialog(self.app.ctx.exports_dir,
                                          f"Exports {describe_filter(self.flt)}."),
                             self._export_chosen)

    def _export_chosen(self, request: ExportRequest | None) -> None:
        if request is None:
            return
        self.busy = "export"
        self.job.start(f"exporting {request.fmt}…")
        self._export(self.app.session, request, self.flt)

    @work(thread=True, exclusive=True, group="audit-job")
    def _export(self, session: Session, request: ExportRequest, flt: EventFilter) -> None:
        # The console, found while the screen is still there: leaving the screen must not
        # abort the export (it used to, on the next progress call), which goes on unseen.
        console = self.app

        def progress(done: int, total: int) -> None:
            console.call_from_thread(self._progress, done, total)

        try:
            with self.app.ctx.open() as app:
                out = request.out
                if out == app.layout.exports:
                    out.mkdir(mode=0o700, parents=True, exist_ok=True)
                result = audit_export.export_trail(app, session, request.fmt, out, flt,
                                                   progress)
        except ApplianceError as exc:
            if not console.told_elsewhere(self, f"export did not run: {exc}", "error"):
                self.post_message(self.JobFailed("export", exc))
            return
        if not console.told_elsewhere(self, f"Exported {result.count:,} events to {result.path}"):
            self.post_message(self.Exported(result))

    def _progress(self, done: int, total: int) -> None:
        if self.is_attached:
            self.job.progress(done, total)

    def on_audit_screen_exported(self, message: Exported) -> None:
        self.busy = None
        r = message.result
        self.job.finish(f"Exported {r.count:,} events to {r.path} "
                        f"(sha256 {r.sha256[:16]}…, manifest {Path(r.manifest_path).name})")
        self._reload_keeping_cursor()

    def on_audit_screen_job_failed(self, message: JobFailed) -> None:
        if message.what != "loading":
            self.busy = None
        undone = "" if message.what == "loading" else f"the {message.what} did not run"
        if self.app.session_error(message.error, undone):
            return
        self.job.finish(f"{message.what} failed: {message.error}", "error")

    def _reload_keeping_cursor(self) -> None:
        current = self.events.current
        self.reload(current.event.seq if current else None, announce=False)
