"""The fast canonical-JSON path is byte-for-byte RFC 8785 wherever it is taken."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.canonical import canonical_bytes

scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text() | st.floats(
    allow_nan=False, allow_infinity=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(values)
def test_fast_path_equals_rfc8785(value) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception as exc:  # the reference refuses: so must we
        with pytest.raises(type(exc)):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == expected


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    value = {"\U0001f600": 1, "\ufb01": 2, "a": 3}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes({"x": 1.0, "y": 1e-7}) == b'{"x":1,"y":1e-7}'
