"""Media: find bundles on removable media or a typed path, import one with progress, and
reclaim the disk of rejected bundles (hospital IT).

Scanning verifies metadata and signatures only (nothing is copied); importing verifies
everything again and copies the payload while hashing it, in a worker. Progress values come
from the store at most ~10 a second on the worker's thread; they are throttled again here
and handed to the UI thread with `call_from_thread`.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from appliance.bundle.progress import ImportProgress
from appliance.errors import ApplianceError
from appliance.identity.session import Session
from appliance.services import media, store
from appliance.services.media import ImportResult, ScanEntry, skipped_note
from appliance.services.store import ReclaimResult
from tui.screens.reclaim import ReclaimDialog, objects
from tui.widgets.inputs import ConsoleInput, typed_path
from tui.widgets.tables import fill_table
from tui.widgets.transfer import TransferProgress, human_bytes

# 80 columns: "ver"; the media folder ("on media") tells copies of one release apart.
COLUMNS = ("bundle", "ver", "publisher", "components", "size", "status", "on media")

UI_INTERVAL_S = 0.2  # progress shown at most five times a second; the last one always


def detail_text(e: ScanEntry) -> str:
    installed = f" (installed: v{e.installed_version})" if e.installed_version else ""
    lines = [f"{e.path}: {e.status}{installed}"]
    if e.reason:
        lines.append(e.reason)
    lines += [f"  {c['kind']:<20} {c['name']:<24} {human_bytes(c['size']):>10}"
              for c in e.components]
    return "\n".join(lines)


def reclaimed_text(r: ReclaimResult) -> str:
    if r.dry_run:
        return (f"nothing to reclaim: all {objects(r.kept_objects)} "
                f"({human_bytes(r.kept_bytes)}) are needed")
    owners = f" (of {', '.join(r.bundles)})" if r.bundles else ""
    return (f"reclaimed {human_bytes(r.bytes)}: removed {objects(r.objects)}{owners}; kept "
            f"{objects(r.kept_objects)} ({human_bytes(r.kept_bytes)})")


def result_text(r: ImportResult) -> str:
    what = "already imported" if r.already_imported else r.state
    return (f"imported {r.name} v{r.version} by {r.publisher}: {what}; copied "
            f"{human_bytes(r.copied_bytes)} ({r.files_copied} files), already present "
            f"{human_bytes(r.skipped_bytes)} ({r.files_skipped} files{skipped_note(r)})")


class MediaScreen(Screen):
    BINDINGS = [
        Binding("s", "scan", "Scan"),
        Binding("i", "import", "Import"),
        Binding("r", "reclaim", "Reclaim disk"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    class Scanned(Message):
        def __init__(self, entries: list[ScanEntry], announce: bool) -> None:
            super().__init__()
            self.entries, self.announce = entries, announce

    class Imported(Message):
        def __init__(self, result: ImportResult) -> None:
            super().__init__()
            self.result = result

    class Reclaimed(Message):
        """A dry run (what could go) or the reclaim itself."""

        def __init__(self, result: ReclaimResult) -> None:
            super().__init__()
            self.result = result

    class Failed(Message):
        def __init__(self, error: ApplianceError, job: str) -> None:
            super().__init__()
            self.error, self.job = error, job  # job: scan | import | reclaim

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, ScanEntry] = {}
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="media-path-row"):
            yield Label("Path ")
            yield ConsoleInput(id="media-path", compact=True,
                               placeholder="bundle directory or .tar; empty: removable media")
        table = DataTable(id="media-list", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("Press s to scan removable media, or type a path and press Enter.",
                     id="media-detail", markup=False)
        yield TransferProgress(id="media-transfer")
        yield Static("", id="media-message", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    # -- helpers ------------------------------------------------------------------------

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def say(self, text: str, error: bool = False) -> None:
        line = self.query_one("#media-message", Static)
        line.update(text)
        line.set_class(error, "-error")

    def paths(self) -> list[Path] | None:
        typed = self.query_one("#media-path", Input).value.strip()
        return [typed_path(typed)] if typed else None

    # -- actions ------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_scan()
        self.query_one(DataTable).focus()

    def action_scan(self) -> None:
        if self.busy:
            return
        paths = self.paths()
        self.say(f"scanning {paths[0]}…" if paths else "scanning removable media…")
        self._scan(self.app.session, paths, announce=True)

    def action_import(self) -> None:
        path = self.selected()
        if path is None or self.busy:
            return
        self.busy = True
        self.say(f"importing {path}: verifying metadata and signatures…")
        self.query_one(TransferProgress).start("verifying…")
        self._import(self.app.session, Path(path))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Import and Reclaim are shown to those who hold them (an admin may scan, but used
        # to be offered Import); the service decides anyway.
        needs = {"import": "media.import", "reclaim": "store.reclaim"}.get(action)
        return needs is None or self.app.may(needs)

    def action_reclaim(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.say("reclaim: finding what no live bundle needs…")
        self._reclaim(self.app.session, None)

    def _reclaim_confirmed(self, reason: str | None) -> None:
        if reason is None:
            self.busy = False
            self.say("reclaim cancelled; nothing was removed")
            return
        self.say("reclaiming…")
        self._reclaim(self.app.session, reason)

    # -- workers ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="media-scan")
    def _scan(self, session: Session, paths: list[Path] | None, announce: bool) -> None:
        try:
            with self.app.ctx.open() as app:
                entries = media.scan(app, session, paths, search_removable=paths is None)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, "scan"))
            return
        self.post_message(self.Scanned(entries, announce))

    @work(thread=True, exclusive=True, group="media-import")
    def _import(self, session: Session, path: Path) -> None:
        last = float("-inf")
        # Found while the screen is still there: leaving it must not abort the import (it
        # used to, on the next progress call), which goes on unseen.
        console = self.app

        def progress(p: ImportProgress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < UI_INTERVAL_S and p.done_bytes < p.total_bytes:
                return
            last = now
            console.call_from_thread(self._progress, p)

        try:
            with self.app.ctx.open() as app:
                result = media.import_bundle(app, session, path, progress)
        except ApplianceError as exc:
            if not console.told_elsewhere(self, f"import did not finish: {exc}", "error"):
                self.post_message(self.Failed(exc, "import"))
            return
        if not console.told_elsewhere(self, result_text(result)):
            self.post_message(self.Imported(result))

    @work(thread=True, exclusive=True, group="media-reclaim")
    def _reclaim(self, session: Session, reason: str | None) -> None:
        """reason None: a dry run, to show what would go before anyone confirms."""
        try:
            with self.app.ctx.open() as app:
                result = store.reclaim(app, session, reason or "", dry_run=reason is None)
        except ApplianceError as exc:
            self.post_message(self.Failed(exc, "reclaim"))
            return
        self.post_message(self.Reclaimed(result))

    # -- results ------------------------------------------------------------------------

    def on_media_screen_scanned(self, msg: Scanned) -> None:
        table = self.query_one(DataTable)
        keep = self.selected()
        self.entries = {e.path: e for e in msg.entries}
        fill_table(table, COLUMNS, [
            (e.path, (e.name or "?", str(e.version or ""), e.publisher, str(len(e.components)),
                      human_bytes(e.size) if e.size else "", e.status, Path(e.path).name))
            for e in msg.entries])
        if keep in self.entries:
            table.move_cursor(row=table.get_row_index(keep))
        n = len(msg.entries)
        if msg.announce:
            self.say(f"{n} bundle{'s' if n != 1 else ''} found; select one and press i to "
                     "import" if n else "no bundles found")
        self._show_detail()

    def _progress(self, p: ImportProgress) -> None:
        if self.is_attached:
            self.query_one(TransferProgress).show(p)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        entry = self.entries.get(self.selected() or "")
        if entry is not None:
            self.query_one("#media-detail", Static).update(detail_text(entry))

    def on_media_screen_imported(self, msg: Imported) -> None:
        self.busy = False
        self.query_one(TransferProgress).finish(keep=True)
        self.say(result_text(msg.result))
        # The list shows what importing would mean now (the bundle: "imported").
        self._scan(self.app.session, self.paths(), announce=False)

    def on_media_screen_reclaimed(self, msg: Reclaimed) -> None:
        r = msg.result
        if r.dry_run and r.objects:
            self.say("reclaim: confirm with a reason, or press Escape")
            self.app.push_screen(ReclaimDialog(r), self._reclaim_confirmed)
            return
        self.busy = False
        self.say(reclaimed_text(r))

    def on_media_screen_failed(self, msg: Failed) -> None:
        if msg.job == "import":
            self.query_one(TransferProgress).finish(keep=False)
        if msg.job != "scan":
            self.busy = False
        undone = {"import": "nothing was imported", "reclaim": "nothing was removed"}.get(
            msg.job, "")
        if not self.app.session_error(msg.error, undone):
            self.say(f"error: {msg.error}", error=True)
