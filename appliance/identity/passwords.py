"""Password hashing with scrypt (memory-hard, standard library), self-describing strings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata

R, P = 8, 1


def normalised(password: str) -> str:
    """NFKC, as NIST SP 800-63B asks: one password, however a keyboard or input method
    composes it ("é" as one code point, or "e" and a combining accent; full-width letters)."""
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str, n: int) -> str:
    salt = secrets.token_bytes(16)
    dk = _derive(normalised(password), salt, n, R, P)
    return f"scrypt${n}${R}${P}${_b64(salt)}${_b64(dk)}"


def unmatchable_hash(n: int) -> str:
    """A stored form that no password matches, checked at the same cost as a real one (same
    n, r, p) without deriving anything to make it: for names that do not exist."""
    return f"scrypt${n}${R}${P}${_b64(bytes(16))}${_b64(bytes(32))}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        expected, salt_bytes, cost = base64.b64decode(dk), base64.b64decode(salt), \
            (int(n), int(r), int(p))
        if hmac.compare_digest(expected, _derive(normalised(password), salt_bytes, *cost)):
            return True
        # A hash stored before passwords were normalised holds the password as typed then
        # (only a non-ASCII one can differ; ASCII is its own NFKC form).
        return password != normalised(password) and \
            hmac.compare_digest(expected, _derive(password, salt_bytes, *cost))
    except (ValueError, TypeError):
        return False


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + 1024 * 1024, dklen=32)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")
