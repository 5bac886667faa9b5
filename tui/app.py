"""The admin console app, one factory for `appliance tui` and for the tests.

Screens: login, then the dashboard; the audit trail opens over it. The app holds the
logged-in Session and nothing else of the appliance's state: screens ask services.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from appliance.clock import Clock
from appliance.hardware import GpuSource
from appliance.identity.session import Session
from tui.context import ConsoleContext
from tui.screens.audit import AuditScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.login import LoginScreen


class ConsoleApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Appliance console"
    BINDINGS = [
        # Shown in the dashboard's footer; here so that it works on every screen.
        Binding("ctrl+l", "logout", "Log out", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.session: Session | None = None

    def on_mount(self) -> None:
        self.sub_title = f"appliance {self.ctx.appliance_id[:8]}"
        self.push_screen(LoginScreen())

    # -- session ---------------------------------------------------------------------

    def start_session(self, session: Session) -> None:
        """Where a successful login leads (a forced password change will come first)."""
        self.session = session
        self.sub_title = f"{session.username} ({', '.join(session.roles)})"
        self.switch_screen(DashboardScreen())

    def end_session(self, notice: str) -> None:
        """Back to the login screen, saying why (log out, and later idle expiry)."""
        self.session = None
        self.sub_title = f"appliance {self.ctx.appliance_id[:8]}"
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(LoginScreen(notice))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("logout", "open_audit", "open_dashboard"):
            return self.session is not None
        return True

    def action_logout(self) -> None:
        if self.session is not None:
            self.end_session(f"{self.session.username} logged out")

    # -- navigation ------------------------------------------------------------------

    def action_open_audit(self) -> None:
        if self.session is None:
            return
        if isinstance(self.screen, AuditScreen):
            return
        self.push_screen(AuditScreen())

    def action_open_dashboard(self) -> None:
        if self.session is None:
            return
        while isinstance(self.screen, AuditScreen) or len(self.screen_stack) > 2:
            self.pop_screen()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if self.session is None:
            return
        yield SystemCommand("Dashboard", "Appliance, audit chain, events, GPUs",
                            self.action_open_dashboard)
        yield SystemCommand("Audit trail", "Browse, filter, verify and export the trail",
                            self.action_open_audit)
        if isinstance(screen, AuditScreen):
            yield SystemCommand("Verify audit trail", "Check the whole chain and checkpoints",
                                screen.action_verify)
            yield SystemCommand("Export audit trail", "CSV, JSON Lines or PDF with a signed "
                                "manifest", screen.action_export)
        yield SystemCommand("Log out", "End this session", self.action_logout)


def build_app(home: Path, clock: Clock | None = None, *, terminal: str | None = None,
              gpu_source: GpuSource | None = None) -> ConsoleApp:
    """The console on the appliance at `home`; tests pass a fixed clock, terminal and GPUs."""
    return ConsoleApp(ConsoleContext.load(Path(home), clock, terminal, gpu_source))


def run_console(home: Path) -> None:
    build_app(home).run()
