"""The dashboard: which appliance, who is signed in, the audit chain, event count, GPUs.

Verification and counting run in one worker (verify first, so the count includes the
verify event it records); the GPU reading runs in another, since NVML can be slow.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from appliance.audit.query import EventFilter
from appliance.audit.verify import VerifyReport
from appliance.errors import ApplianceError
from appliance.identity.roles import granting_role, roles_for
from appliance.identity.session import Session
from appliance.services import audit, status


@dataclass(frozen=True)
class DashboardData:
    report: VerifyReport | None      # None: this user may not verify
    events: int
    conflicts: list[str]


def chain_text(report: VerifyReport | None) -> tuple[str, str]:
    """(text, class) for the audit chain line."""
    if report is None:
        need = ", ".join(sorted(roles_for("audit.verify")))
        return f"not checked (verifying needs one of: {need})", "-muted"
    if report.ok:
        return (f"OK ({report.mode}: {report.events_checked:,} events checked, "
                f"head seq {report.head_seq:,})", "-ok")
    kinds = ", ".join(sorted(report.kinds()))
    where = f" at seq {report.first_bad_seq}" if report.first_bad_seq else ""
    return f"FAILED{where} ({kinds})", "-error"


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("a", "app.open_audit", "Audit trail"),
        Binding("r", "refresh", "Refresh"),
        Binding("ctrl+l", "app.logout", "Log out"),
    ]

    class Loaded(Message):
        def __init__(self, data: DashboardData) -> None:
            super().__init__()
            self.data = data

    class GpuRead(Message):
        def __init__(self, summary: str) -> None:
            super().__init__()
            self.summary = summary

    class Failed(Message):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def compose(self) -> ComposeResult:
        session = self.app.session
        yield Header()
        with VerticalScroll(id="dashboard"):
            yield Static("", id="role-warning", markup=False)
            with Grid(id="dash-grid"):
                yield Static("Appliance", classes="dash-key")
                yield Static(self.app.ctx.appliance_id, id="dash-appliance", markup=False)
                yield Static("Signed in", classes="dash-key")
                yield Static(f"{session.full_name} ({session.username})", id="dash-user",
                             markup=False)
                yield Static("Roles", classes="dash-key")
                yield Static(", ".join(session.roles), id="dash-roles", markup=False)
                yield Static("Audit chain", classes="dash-key")
                yield Static("checking…", id="dash-chain", markup=False)
                yield Static("Events", classes="dash-key")
                yield Static("counting…", id="dash-events", markup=False)
                yield Static("GPUs", classes="dash-key")
                yield Static("reading…", id="dash-gpus", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def on_screen_resume(self) -> None:
        # Back from another screen: the count moved on, the chain was checked on open.
        if self.is_mounted and self.app.session is not None:
            self._load(self.app.session, verify=False)

    def action_refresh(self) -> None:
        self.query_one("#dash-chain", Static).update("checking…")
        self._load(self.app.session, verify=True)
        self._read_gpus()

    @work(thread=True, exclusive=True, group="dashboard")
    def _load(self, session: Session, verify: bool) -> None:
        may_verify = granting_role(session.roles, "audit.verify") is not None
        try:
            with self.app.ctx.open() as app:
                conflicts = status.role_conflicts(app, session)
                report = audit.verify(app, session, incremental=True) if (
                    verify and may_verify) else None
                events = audit.count(app, session, EventFilter())
        except ApplianceError as exc:
            self.post_message(self.Failed(str(exc)))
            return
        self.post_message(self.Loaded(DashboardData(report, events, conflicts)))

    @work(thread=True, exclusive=True, group="gpus")
    def _read_gpus(self) -> None:
        self.post_message(self.GpuRead(self.app.ctx.gpu_summary()))

    def on_dashboard_screen_loaded(self, message: Loaded) -> None:
        data = message.data
        session = self.app.session
        if session is None:
            return
        if data.report is not None or granting_role(session.roles, "audit.verify") is None:
            text, cls = chain_text(data.report)
            chain = self.query_one("#dash-chain", Static)
            chain.update(text)
            chain.set_classes(cls)
        self.query_one("#dash-events", Static).update(f"{data.events:,}")
        warning = self.query_one("#role-warning", Static)
        if data.conflicts:
            names = ", ".join(data.conflicts)
            verb = "holds" if len(data.conflicts) == 1 else "hold"
            warning.update(f"Warning: {names} still {verb} both admin and security roles: "
                           "separate the admin and security roles (give account management "
                           "to another person).")
        warning.display = bool(data.conflicts)

    def on_dashboard_screen_gpu_read(self, message: GpuRead) -> None:
        self.query_one("#dash-gpus", Static).update(message.summary)

    def on_dashboard_screen_failed(self, message: Failed) -> None:
        chain = self.query_one("#dash-chain", Static)
        chain.update(message.message)
        chain.set_classes("-error")
