"""The reclaim dialog: what the store would give back, and the reason the audit trail keeps."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from appliance.services.store import ReclaimResult
from tui.widgets.dialog import FormDialog
from tui.widgets.inputs import ConsoleInput
from tui.widgets.transfer import human_bytes


def objects(n: int) -> str:
    return f"{n} object{'s' if n != 1 else ''}"


def preview_text(r: ReclaimResult) -> str:
    owners = f" of {', '.join(r.bundles)}" if r.bundles else ""
    unrecorded = (f", {r.unrecorded} recorded by no bundle (an import never resumed)"
                  if r.unrecorded else "")
    return (f"{objects(r.objects)}, {human_bytes(r.bytes)}{owners}{unrecorded}, can go. "
            f"{objects(r.kept_objects)}, {human_bytes(r.kept_bytes)}, stay: live bundles, "
            "kept releases and installs need them.")


class ReclaimDialog(FormDialog[str]):
    """Dismissed with the reason to reclaim with, or None (nothing is removed)."""

    AUTO_FOCUS = "#reclaim-reason"

    def __init__(self, preview: ReclaimResult) -> None:
        super().__init__()
        self.preview = preview

    def compose(self) -> ComposeResult:
        with Vertical(id="reclaim-box"):
            yield Static("Reclaim the content store's disk", id="reclaim-title")
            yield Static(preview_text(self.preview), id="reclaim-summary", markup=False)
            yield Label("Reason (recorded in the audit trail)")
            yield ConsoleInput(id="reclaim-reason")
            yield Static("", id="reclaim-note", markup=False)
            with Horizontal(id="reclaim-buttons"):
                yield Button("Reclaim", variant="warning", id="reclaim-ok")
                yield Button("Cancel", id="reclaim-cancel")

    def submit(self) -> None:
        reason = self.query_one("#reclaim-reason", Input).value.strip()
        if not reason:
            self.query_one("#reclaim-note", Static).update("a reason is needed")
            return
        self.dismiss(reason)
