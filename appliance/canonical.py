"""Canonical JSON (RFC 8785): the only byte form that is hashed or signed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

_MAX_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _plain(obj: Any) -> bool:
    """True when the standard library's sorted, compact JSON is byte-for-byte RFC 8785:
    no floats (ES6 number formatting differs), integers within 2^53, and keys below
    U+D800 (code-point order then equals RFC 8785's UTF-16 order)."""
    if isinstance(obj, str) or obj is None or isinstance(obj, bool):
        return True
    if isinstance(obj, int):
        return -_MAX_SAFE_INT <= obj <= _MAX_SAFE_INT
    if isinstance(obj, dict):
        return all(isinstance(k, str) and (not k or max(k) < "\ud800") and _plain(v)
                   for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return all(_plain(v) for v in obj)
    return False


def canonical_bytes(obj: Any) -> bytes:
    # The audit trail encodes every event: the fast path keeps appends cheap, and anything
    # outside it goes through the reference implementation.
    if _plain(obj):
        try:
            return _encode(obj).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let rfc8785 refuse them
            pass
    return rfc8785.dumps(obj)


def canonical_text(obj: Any) -> str:
    return canonical_bytes(obj).decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(obj: Any) -> str:
    """SHA-256 of a record's canonical form: what signatures bind to (11.70)."""
    return sha256_hex(canonical_bytes(obj))
