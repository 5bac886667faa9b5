"""Progress of a copy: a bar and one line with bytes, rate, ETA and the file being copied.

Fed `ImportProgress` values (already at most ~10 a second from the store); the widget only
shows them, so it can serve any byte-counted job.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from appliance.bundle.progress import ImportProgress


def human_bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_line(p: ImportProgress) -> str:
    """'1.5 MiB of 4.0 MiB, 20.0 MiB/s, ETA 0:01, targets/base/model.safetensors'."""
    parts = [f"{human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)}",
             f"{human_bytes(p.rate_bps)}/s", f"ETA {eta_text(p.eta_s)}"]
    if p.current:
        parts.append(p.current)
    return ", ".join(parts)


class TransferProgress(Vertical):
    DEFAULT_CSS = """
    TransferProgress { height: auto; display: none; }
    TransferProgress.-running, TransferProgress.-done { display: block; }
    TransferProgress > ProgressBar { width: 1fr; }
    TransferProgress > #transfer-line {
        height: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def compose(self) -> ComposeResult:
        yield ProgressBar(show_eta=False, id="transfer-bar")
        yield Static("", id="transfer-line", markup=False)

    @property
    def line(self) -> str:
        return str(self.query_one("#transfer-line", Static).content)

    def start(self, text: str) -> None:
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one("#transfer-line", Static).update(text)
        self.set_classes("-running")

    def show(self, p: ImportProgress) -> None:
        self.query_one(ProgressBar).update(total=max(p.total_bytes, 1), progress=p.done_bytes)
        self.query_one("#transfer-line", Static).update(progress_line(p))

    def finish(self, keep: bool) -> None:
        """Stop; `keep` leaves the last figures on screen (a finished import), else hide."""
        self.set_classes("-done" if keep else "")
