"""The human-readable PDF copy of the audit trail (11.10(b)), with signature manifestations (11.50).

Courier makes every character the same width, so each table line is one pre-formatted
string (one PDF text operation instead of one cell per column): 10,000 events take a few
seconds. Core fonts only know Latin-1; other characters are printed as `\\uXXXX` escapes so
nothing is dropped, and the CSV/JSON Lines exports hold every value in full.
"""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
from collections.abc import Callable

from fpdf import FPDF

from appliance.audit.events import FLAT_COLUMNS
from appliance.audit.export import (
    FLAT_SELECT,
    HAS_NUL,
    ExportHeader,
    HashingWriter,
    iter_batches,
    stored_event,
)
from appliance.clock import parse_ts

MARGIN = 10.0
FONT_PT = 7.0
CHAR_MM = FONT_PT * 0.6 * 25.4 / 72  # Courier advance width is 600/1000 em
LINE_MM = 3.1
PAGE_W, PAGE_H = 297.0, 210.0
WIDTH = int((PAGE_W - 2 * MARGIN) / CHAR_MM)
FOOTER_MM = 10.0
MAX_VALUE_LINES = 2    # old/new values; longer ones are cut here, whole in CSV/JSONL

# (title, width in characters); "reason" takes what is left of the line.
_FIXED = [("seq", 7), ("time (UTC)", 24), ("actor: printed name (user, role)", 34),
          ("action", 22), ("target", 32), ("outcome", 7)]
COLUMNS = _FIXED + [("reason", WIDTH - sum(w for _, w in _FIXED) - len(_FIXED))]
INDENT = sum(w + 1 for _, w in _FIXED[:2])

_IDX = {name: i + 1 for i, name in enumerate(FLAT_COLUMNS)}  # row[0] is the paging seq
_CONTROL = {9: "\\t", 10: "\\n", 13: "\\r"}
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Latin-1 for the core fonts; anything else becomes a visible escape, never dropped."""
    if not text.isascii() or not text.isprintable():
        text = _CONTROL_RE.sub(
            lambda m: _CONTROL.get(ord(m[0]), f"\\x{ord(m[0]):02x}"), text)
        text = text.encode("latin-1", "backslashreplace").decode("latin-1")
    return text


def _plain(text: str) -> str:
    """Free text before `printable`: its own backslashes are doubled, so a typed "\\u674e"
    never reads like the escape of a character the fonts lack. (JSON values need no
    such care: JSON already writes a backslash as two.)"""
    return text.replace("\\", "\\\\")


def _wrap(text: str, width: int, max_lines: int | None = None) -> list[str]:
    text = printable(text)
    if len(text) <= width:
        return [text]
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False,
                          drop_whitespace=True) or [""]
    if max_lines is not None and len(lines) > max_lines:
        # A value to be cut fills every line it keeps: word-wrapping could leave only its
        # label ("details:") before the cut when the value is one long word.
        lines = [text[i:i + width] for i in range(0, len(text), width)]
        cut = "... [cut here; full value in CSV/JSONL]"
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - len(cut))] + cut
    return lines


class _TrailPDF(FPDF):
    def __init__(self, hdr: ExportHeader, summary: list[str]) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.hdr = hdr
        self.summary = summary
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(False)
        self.alias_nb_pages("{pages}")  # reserves room for up to 6 digits
        self.y_text = 0.0

    def header(self) -> None:
        hdr, cp = self.hdr, self.hdr.checkpoint
        self.set_font("Helvetica", "B", 10)
        self.text(MARGIN, MARGIN + 3, "Audit trail export - appliance " + hdr.appliance_id)
        self.set_font("Courier", "", 6.5)
        y = MARGIN + 7
        self.text(MARGIN, y, f"Chain head: seq {hdr.head_seq}  sha256 {hdr.head_hash}")
        self.text(MARGIN, y + 3, (
            f"Newest checkpoint: tree size {cp.tree_size}, head {cp.head_hash[:16]}..., "
            f"Merkle root {cp.merkle_root[:16]}..., signed {cp.body.get('ts', '')}, "
            f"signature {cp.signature[:24]}..., key {hdr.key_id[:16]}..."))
        self.set_draw_color(0)
        self.line(MARGIN, y + 4.5, PAGE_W - MARGIN, y + 4.5)
        self.y_text = y + 8.5
        if self.page_no() == 1:
            self._title_block()
        self._column_titles()

    def _title_block(self) -> None:
        self.set_font("Courier", "", 7.5)
        width = int((PAGE_W - 2 * MARGIN) / (7.5 * 0.6 * 25.4 / 72))
        for item in self.summary:
            for line in textwrap.wrap(printable(item), width, subsequent_indent=" " * 16):
                self.text(MARGIN, self.y_text, line)
                self.y_text += 3.4
        self.y_text += 2

    def _column_titles(self) -> None:
        self.set_font("Courier", "B", FONT_PT)
        self.text(MARGIN, self.y_text, " ".join(t.ljust(w)[:w] for t, w in COLUMNS))
        self.set_draw_color(120)
        self.line(MARGIN, self.y_text + 1, PAGE_W - MARGIN, self.y_text + 1)
        self.y_text += LINE_MM + 0.6
        self.set_font("Courier", "", FONT_PT)

    def footer(self) -> None:
        hdr, by = self.hdr, self.hdr.exported_by
        self.set_font("Courier", "", 6.5)
        y = PAGE_H - MARGIN + 2
        self.text(MARGIN, y, printable(
            f"Exported {hdr.exported_at} by {_plain(by.name)} ({_plain(by.username)}, {by.role}). "
            "This file's SHA-256 is in its signed manifest: check with verify-audit-export."))
        # cell(), not text(): only cells get the total page count substituted.
        self.set_xy(PAGE_W - MARGIN - 30, y - 2.5)
        self.cell(30, 3, f"Page {self.page_no()} of {self.str_alias_nb_pages}")

    def event(self, lines: list[tuple[str, bool]]) -> None:
        bottom = PAGE_H - MARGIN - FOOTER_MM
        if self.y_text + len(lines) * LINE_MM > bottom:
            self.add_page()
        for text, bold in lines:
            if bold:
                self.set_font("Courier", "B", FONT_PT)
            self.text(MARGIN, self.y_text, text)
            if bold:
                self.set_font("Courier", "", FONT_PT)
            self.y_text += LINE_MM
        self.set_draw_color(200)
        y = self.y_text - LINE_MM + 1.0
        self.line(MARGIN, y, PAGE_W - MARGIN, y)
        self.y_text += 0.5


def event_lines(row: tuple) -> list[tuple[str, bool]]:
    """One event as table lines (columns wrapped) plus full-width lines for signature,
    old and new values, details and clock warnings."""
    def f(name: str) -> str:
        return str(row[_IDX[name]])

    target = f"{f('target_type')} {f('target_id')}".strip()
    if f("target_digest"):
        target += f" [{f('target_digest')[:16]}...]"
    cells = [f("seq"), f("ts"), f"{f('actor_name')} ({f('actor')}, {f('actor_role')})",
             f("action"), target, f("outcome"), f("reason")]
    wrapped = [_wrap(_plain(c), w) for c, (_, w) in zip(cells, COLUMNS, strict=True)]
    out = []
    for i in range(max(len(w) for w in wrapped)):
        parts = [(w[i] if i < len(w) else "") for w in wrapped]
        parts[0] = parts[0].rjust(COLUMNS[0][1])
        out.append((" ".join(p.ljust(w) for p, (_, w) in zip(parts, COLUMNS, strict=True))
                    .rstrip(), False))
    pad, room = " " * INDENT, WIDTH - INDENT
    sig_json = row[len(FLAT_COLUMNS) + 1]
    if sig_json and sig_json not in ("null", "{}"):
        sig = json.loads(sig_json)
        # The manifestation itself (11.50) is never cut, however long the printed name.
        text = (f"ELECTRONIC SIGNATURE: {_plain(sig.get('name', ''))} "
                f"({_plain(sig.get('username', ''))}) | meaning: {_plain(sig.get('meaning', ''))}"
                f" | signed {_plain(sig.get('ts', ''))} UTC")
        out += [(pad + s, True) for s in _wrap(text, room)]
        extra = {k: v for k, v in sig.items() if k not in ("name", "username", "meaning", "ts")}
        if extra:
            text = "signed record: " + json.dumps(extra, sort_keys=True, separators=(",", ":"))
            out += [(pad + s, True) for s in _wrap(text, room, MAX_VALUE_LINES)]
    for name in ("old", "new"):
        if f(name):
            out += [(pad + s, False) for s in _wrap(f"{name}: {f(name)}", room, MAX_VALUE_LINES)]
    if f("details"):
        out += [(pad + s, False) for s in _wrap(f"details: {f('details')}", room, 1)]
    if f("clock_warning"):
        out += [(pad + s, True) for s in _wrap(f"CLOCK WARNING: {f('clock_warning')}", room)]
    return out


def _row_python(conn: sqlite3.Connection, seq: int) -> tuple:
    """The SQL row rebuilt from the stored body, for the rare body SQLite's JSON cannot read."""
    e = stored_event(conn, seq)
    sig = e.data.get("signature")
    return (seq, *e.flat().values(), json.dumps(sig) if sig else None, False)


def _summary(hdr: ExportHeader, total: int, first_ts: str | None, last_ts: str | None
             ) -> list[str]:
    flt = {k: v for k, v in vars(hdr.flt).items() if v}
    by = hdr.exported_by
    return [
        f"Appliance id:   {hdr.appliance_id}",
        f"Exported by:    {_plain(by.name)} ({_plain(by.username)}, role {by.role}) at "
        f"{hdr.exported_at} UTC",
        "Filter:         " + (", ".join(f"{k}={_plain(v)}" for k, v in flt.items())
                              or "none (all events)"),
        f"Range:          {total} events, {first_ts or '-'} .. {last_ts or '-'} UTC, "
        f"trail up to seq {hdr.head_seq}",
        "Contents:       seq, time, actor, action, target, outcome, reason; signatures, old/new "
        "values and details below each event. Long values are cut; the CSV and JSON Lines "
        "exports hold them whole. Characters these fonts lack (beyond Latin-1) appear as "
        "\\uXXXX or \\UXXXXXXXX escapes of their code points, control characters as \\n, \\t, "
        "\\r or \\xXX, and a backslash in free text as \\\\.",
    ]


def write_pdf(conn: sqlite3.Connection, hdr: ExportHeader, out: HashingWriter, total: int,
              first_ts: str | None, last_ts: str | None,
              progress: Callable[[int, int], None] | None = None) -> int:
    pdf = _TrailPDF(hdr, _summary(hdr, total, first_ts, last_ts))
    pdf.set_title(f"Audit trail export {hdr.appliance_id}")
    pdf.set_author(f"{hdr.exported_by.name} ({hdr.exported_by.username})")
    pdf.set_creator("clinical-appliance")
    # Fixed by the export time, so the same export gives the same bytes.
    pdf.set_creation_date(parse_ts(hdr.exported_at).replace(microsecond=0))
    pdf.add_page()
    count = 0
    select = f"{FLAT_SELECT}, body -> '$.signature', {HAS_NUL}"
    for rows in iter_batches(conn, select, hdr.flt, hdr.head_seq):
        for row in rows:
            pdf.event(event_lines(row if not row[-1] else _row_python(conn, row[0])))
        count += len(rows)
        if progress is not None:
            progress(count, total)
    if count == 0:
        pdf.text(MARGIN, pdf.y_text + 2, "No events match this filter.")
    out.write(bytes(pdf.output()))
    return count

