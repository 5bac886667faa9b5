"""Keep secrets out of what a run stores: its audit event, its row, its artifacts.

Extra variables whose name says they are secret are replaced by a marker wherever they
are written down; after a run every artifact is rewritten without their values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|api_?key|private_?key(?!_file)|become_pass",
    re.IGNORECASE)
_MIN_SECRET_LEN = 4


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.endswith(("_file", "_path", "_dir"))


def redact(value: Any, name: str = "") -> Any:
    """A copy of extra vars with secret-named values replaced, at any depth."""
    if name and is_secret_name(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def secret_values(value: Any, name: str = "", inside_secret: bool = False) -> set[str]:
    """Every string that `redact` would hide, to scrub from text files afterwards.

    `redact` hides a secret-named dict or list whole (`api_token: {value: ...}`), so
    everything inside one is secret whatever its own name."""
    found: set[str] = set()
    secret = inside_secret or bool(name and is_secret_name(name))
    if isinstance(value, dict):
        for k, v in value.items():
            found |= secret_values(v, str(k), secret)
    elif isinstance(value, list):
        for v in value:
            found |= secret_values(v, name, secret)
    elif secret and value is not None:
        text = str(value)
        if len(text) >= _MIN_SECRET_LEN:
            found.add(text)
    return found


def scrub_text(text: str, secrets: set[str]) -> str:
    """`text` without the secret strings (longest first, so none is left half-hidden)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def scrub_tree(root: Path, secrets: set[str]) -> int:
    """Rewrite every file under root without the secret strings; returns files changed."""
    if not secrets:
        return 0
    forms = {s.encode() for s in secrets} | {json.dumps(s)[1:-1].encode() for s in secrets}
    needles = sorted(forms, key=len, reverse=True)
    changed = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
            new = data
            for needle in needles:
                new = new.replace(needle, REDACTED.encode())
            if new != data:
                path.write_bytes(new)
                changed += 1
        except OSError:
            path.unlink(missing_ok=True)  # a file we cannot scrub is not kept
    return changed
