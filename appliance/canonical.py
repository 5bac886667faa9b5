"""Canonical JSON (RFC 8785): the only byte form that is hashed or signed."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_bytes(obj: Any) -> bytes:
    return rfc8785.dumps(obj)


def canonical_text(obj: Any) -> str:
    return rfc8785.dumps(obj).decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(obj: Any) -> str:
    """SHA-256 of a record's canonical form: what signatures bind to (11.70)."""
    return sha256_hex(canonical_bytes(obj))
