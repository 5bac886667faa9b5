"""Canonical JSON (RFC 8785): the only byte form that is hashed or signed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

_MAX_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _refuse(obj: Any) -> Any:
    raise TypeError(f"not JSON: {type(obj).__name__}")


# The C encoder behind `_encode`, called directly: JSONEncoder.encode's Python wrapper costs
# more than the encoding for audit-sized values. No cycle check (values come from is_plain).
_c_encoder = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False)


def encode_sorted(obj: Any) -> str:
    """Sorted, compact JSON text with non-ASCII kept: RFC 8785 for values is_plain accepts."""
    if _c_encoder is None:
        return _encode(obj)
    return "".join(_c_encoder(obj, 0))


def is_plain(obj: Any) -> bool:
    """True when the standard library's sorted, compact JSON is byte-for-byte RFC 8785:
    no floats (ES6 number formatting differs), integers within 2^53, and keys below
    U+D800 (code-point order then equals RFC 8785's UTF-16 order). A loop, not recursion:
    it runs for every audit event."""
    stack = [obj]
    pop, push = stack.pop, stack.extend
    while stack:
        x = pop()
        t = type(x)
        if t is str or x is None or t is bool:
            continue
        if t is int:
            if not -_MAX_SAFE_INT <= x <= _MAX_SAFE_INT:
                return False
        elif t is dict:
            for k in x:
                if type(k) is not str or not (k.isascii() or max(k) < "\ud800"):
                    return False
            push(x.values())
        elif t is list or t is tuple:
            push(x)
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
    """RFC 8785 bytes of a value `is_plain` accepted (or one whose parts the caller checked)."""
    try:
        return encode_sorted(obj).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: let rfc8785 refuse them
        return rfc8785.dumps(obj)


def canonical_text(obj: Any) -> str:
    return canonical_bytes(obj).decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(obj: Any) -> str:
    """SHA-256 of a record's canonical form: what signatures bind to (11.70)."""
    return sha256_hex(canonical_bytes(obj))
