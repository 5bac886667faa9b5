"""Text that people type, the audit trail keeps and terminals show.

A reason or a printed name is one line of plain text: a newline in one could forge a line
of `appliance audit events`, an escape sequence could recolour or hide what an auditor's
terminal shows, and a bidirectional override could make a reason read differently from
what is stored. Such text is refused where it is typed (`one_line`); whatever is stored
already, or arrives from media, is shown with those characters escaped (`shown`).
"""

from __future__ import annotations

import re

from appliance.errors import InvalidInput

# C0 and C1 controls (newline, tab and escape among them), DEL, the Unicode line and
# paragraph separators, and the bidirectional embeddings, overrides and isolates.
_BEYOND_ASCII = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_ASCII}]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_BEYOND_ASCII}]")


def unsafe_character(value: str) -> str | None:
    """The first character of `value` that `_UNSAFE` names, as its escape, or None: for
    checks that refuse in their own terms (a bundle description from media)."""
    found = _UNSAFE.search(value)
    return ascii(found.group())[1:-1] if found else None


def not_plain(value: str) -> str | None:
    """Why `value` is not one line of plain text, or None: a character `_UNSAFE` names, or
    text that is not UTF-8 (a lone surrogate, which a JSON escape such as "\\ud800" makes):
    the trail cannot hash it nor a terminal print it. For text read from files."""
    found = unsafe_character(value)
    if found:
        return f"contains a control character ('{found}')"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8 text"
    return None


def one_line(value: str, what: str) -> str:
    """`value` without surrounding blanks; refused if it holds a character `_UNSAFE` names."""
    value = value.strip()
    found = unsafe_character(value)
    if found:
        raise InvalidInput(f"{what} contains a control character ('{found}')",
                           f"type {what} as one line of plain text")
    return value


def shown(value: str, *, keep_newlines: bool = False) -> str:
    """`value` for a terminal: each such character as its escape (a newline as \\n), so a
    stored value can neither forge a line nor move the cursor. Storage is unchanged.
    `keep_newlines` for text laid out in lines by the appliance itself (indented JSON,
    whose strings carry their own newlines escaped)."""
    unsafe = _UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE
    return unsafe.sub(lambda m: ascii(m.group())[1:-1], value)
