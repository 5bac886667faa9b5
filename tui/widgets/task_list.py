"""A provisioning run's task list: one row per host and task, its result filled in when it
arrives. Fed batches of task events (live, or a stored run's replay) through `LiveRun`."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import DataTable

from appliance.provision.events import TaskEvent
from tui.provision_live import MAX_ROWS, LiveRun, TaskRow

STYLES = {"failed": "bold red", "unreachable": "bold red", "changed": "yellow",
          "ok": "green", "skipped": "dim", "running": "bold", "play": "bold",
          "cancelled": "bold red", "timeout": "bold red", "interrupted": "bold red"}


class TaskList(DataTable):
    DEFAULT_CSS = """
    TaskList { height: 1fr; min-height: 3; }
    """

    def __init__(self, max_rows: int = MAX_ROWS, **kw) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.max_rows = max_rows
        self.live = LiveRun(max_rows)
        self._result_col = None

    def on_mount(self) -> None:
        _, self._result_col, _ = self.add_columns("host", "result", "task")

    def reset(self) -> None:
        self.clear()
        self.live = LiveRun(self.max_rows)

    def feed(self, events: Iterable[TaskEvent]) -> None:
        added, changed = self.live.fold(events)
        for row in added:
            # Text, not str: DataTable reads strings as markup, and task names have brackets.
            self.add_row(Text(row.host), _result(row), Text(row.task), key=row.key)
        for row in changed:
            self.update_cell(row.key, self._result_col, _result(row))
        if added:
            self.move_cursor(row=self.row_count - 1, scroll=True)

    def close(self, status: str) -> None:
        """The run ended: rows still running show how it ended (cancelled, timeout)."""
        for row in self.live.close(status):
            self.update_cell(row.key, self._result_col, _result(row))


def _result(row: TaskRow) -> Text:
    return Text(row.result, style=STYLES.get(row.result, ""))
