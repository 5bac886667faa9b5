"""One status line for long work: a message, and a progress bar while a job runs. An error
may take up to four lines, so its cause and hint are not cut off at 80 columns."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static


class JobStatus(Horizontal):
    DEFAULT_CSS = """
    JobStatus { height: 1; }
    JobStatus > #job-message { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    JobStatus > ProgressBar { width: 32; display: none; }
    JobStatus.-running > ProgressBar { display: block; }
    JobStatus.-error { height: auto; max-height: 4; }
    JobStatus.-error > #job-message {
        color: $error; text-style: bold; height: auto; text-wrap: wrap; text-overflow: fold;
    }
    JobStatus.-ok > #job-message { color: $success; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="job-message", markup=False)
        yield ProgressBar(show_eta=False, id="job-progress")

    @property
    def message(self) -> str:
        return str(self.query_one("#job-message", Static).content)

    def say(self, text: str, kind: str = "info") -> None:
        """kind: info, ok or error (styles the line)."""
        self.query_one("#job-message", Static).update(text)
        self.set_class(kind == "ok", "-ok")
        self.set_class(kind == "error", "-error")

    def start(self, text: str) -> None:
        self.say(text)
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.add_class("-running")

    def progress(self, done: int, total: int) -> None:
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)

    def finish(self, text: str, kind: str = "ok") -> None:
        self.remove_class("-running")
        self.say(text, kind)
