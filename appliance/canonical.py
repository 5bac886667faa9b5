"""Canonical JSON (RFC 8785): the only byte form that is hashed or signed."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785

_MAX_SAFE_INT = 2**53 - 1
# Strict integers: beyond 2^53 orjson refuses, and rfc8785 then gives the reason.
_PLAIN = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


_SCALARS = frozenset({str, bool, type(None)})
_NESTED = frozenset({dict, list, tuple})


def is_plain(obj: Any) -> bool:
    """True when a sorted, compact JSON encoder's output is byte-for-byte RFC 8785: no
    floats (ES6 number formatting differs), integers within 2^53, and keys below U+D800
    (code-point order then equals RFC 8785's UTF-16 order). A loop over containers, with
    scalars checked in place, not recursion: it runs for every audit event."""
    stack = [obj]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is dict:
            for k in x:
                if type(k) is not str or not (k.isascii() or max(k) < "\ud800"):
                    return False
            items = x.values()
        elif t is list or t is tuple:
            items = x
        else:
            items = (x,)
        for v in items:
            tv = type(v)
            if tv in _SCALARS:
                continue
            if tv is int:
                if not -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                    return False
            elif tv in _NESTED:
                stack.append(v)
            else:
                return False
    return True


def canonical_bytes(obj: Any) -> bytes:
    # The audit trail encodes every event: the fast path keeps appends cheap, and anything
    # outside it goes through the reference implementation.
    if is_plain(obj):
        return encode_plain(obj)
    return rfc8785.dumps(obj)


def encode_plain(obj: Any) -> bytes:
    """RFC 8785 bytes of a value `is_plain` accepted (or one whose parts the caller checked,
    integers aside). orjson's sorted compact output (UTF-8, non-ASCII kept, control
    characters escaped in lower-case hex) is RFC 8785 for such values; tests hold it to the
    reference."""
    try:
        return orjson.dumps(obj, option=_PLAIN)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates: let rfc8785 refuse them
        return rfc8785.dumps(obj)


def canonical_text(obj: Any) -> str:
    return canonical_bytes(obj).decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(obj: Any) -> str:
    """SHA-256 of a record's canonical form: what signatures bind to (11.70)."""
    return sha256_hex(canonical_bytes(obj))
