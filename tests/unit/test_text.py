"""Typed text is one line of plain text; stored text is shown so it cannot forge a line."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.text import one_line, shown

UNSAFE = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029",
          "\u202e", "\u2066", "\u2069"]


@pytest.mark.parametrize("ch", UNSAFE)
def test_control_characters_are_refused_where_typed(ch: str) -> None:
    with pytest.raises(InvalidInput, match=r"the reason contains a control character"):
        one_line(f"approved{ch}by mistake", "the reason")


def test_plain_text_in_any_script_is_kept() -> None:
    text = "Befund geprüft · 已审核 · revisión médica\u00a0: OK ✅ (Zoë O'Neil)"
    assert one_line(f"  {text} ", "the reason") == text
    assert shown(text) == text


def test_shown_escapes_each_unsafe_character_and_nothing_else() -> None:
    stored = "ok\n     99 2026-01-01T00:00:00.000Z Dana Admin update.approve\x1b[2K\u202eevil"
    assert shown(stored) == ("ok\\n     99 2026-01-01T00:00:00.000Z Dana Admin "
                             "update.approve\\x1b[2K\\u202eevil")
    assert all(shown(ch) != ch and "\\" in shown(ch) for ch in UNSAFE)


def test_cli_text_output_never_carries_a_raw_control_character(capsys) -> None:
    """The last guard in `emit`: a listing that forgot `shown` still prints escapes."""
    from appliance.cli.common import emit
    emit({"ignored": True}, False, "publisher: Acme\x1b]0;owned\x07 Inc\nline two\u202e")
    out = capsys.readouterr().out
    assert out == "publisher: Acme\\x1b]0;owned\\x07 Inc\nline two\\u202e\n"
