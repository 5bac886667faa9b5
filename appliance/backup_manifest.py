"""Backup manifests: the SHA-256 of every file in a backup, signed by the appliance key.

The audit chain proves only the audit tables. The manifest covers the rest of what a
restore brings back (the state tables in the same database file, the settings, the keys,
the content store's objects), and says exactly which files a backup holds, so nothing can
be added or left out. A store object must also be named by its own SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.canonical import canonical_bytes
from appliance.durable import write_atomic
from appliance.errors import IntegrityError, InvalidInput
from appliance.home import HomeLayout
from appliance.keys import SigningKey, fingerprint, load_public_pem, verify_signature

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "appliance-backup-manifest/1"
_BLOCK = 1 << 20
REFUSED = "this backup cannot be restored; use another one"
# A content-store object in a backup, as in a home: named by its SHA-256.
_OBJECT = re.compile(r"store/sha256/([0-9a-f]{2})/(\1[0-9a-f]{62})")


@dataclass(frozen=True)
class Sealed:
    """What a checked manifest vouches for."""

    key_fingerprint: str
    files: tuple[str, ...]
    holds_store: bool = False    # made since backups hold the content store


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path) -> tuple[dict[str, Path], set[str], list[str]]:
    """Regular files and directories under `root` (relative, '/'-separated), and anything
    else (links, devices): a backup holds only plain files, so links are never followed."""
    files: dict[str, Path] = {}
    dirs: set[str] = set()
    other: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                files[rel] = path
            elif stat.S_ISDIR(mode):
                dirs.add(rel)
            else:
                other.append(rel)
        dirnames[:] = [d for d in dirnames if stat.S_ISDIR(os.lstat(Path(dirpath) / d).st_mode)]
    return files, dirs, other


def seal(root: Path, key: SigningKey, summary: dict[str, Any],
         known: dict[str, str] | None = None) -> None:
    """Write the signed manifest of every file now under `root` (the last file written).
    `known`: digests already taken while copying (the store's objects), not read again."""
    files, _, other = _walk(root)
    if other:
        raise OSError(f"unexpected entry in the backup: {other[0]}")
    known = known or {}
    body = {**summary, "key_id": key.key_id,
            "files": {rel: known.get(rel) or _sha256(path)
                      for rel, path in sorted(files.items())}}
    text = canonical_bytes(body).decode("utf-8")
    doc = {"format": MANIFEST_FORMAT, "manifest": body, "manifest_text": text,
           "signature": key.sign(text.encode("utf-8"))}
    write_atomic(root / MANIFEST, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"))


def _plain(fp: str) -> str:
    return "".join(fp.split()).replace(":", "").lower()


def _read(path: Path, shown: Path) -> tuple[dict[str, Any], str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        body, text, signature = doc["manifest"], doc["manifest_text"], doc["signature"]
        if (doc.get("format") != MANIFEST_FORMAT or not isinstance(text, str)
                or json.loads(text) != body or not isinstance(body.get("key_id"), str)
                or not isinstance(body.get("files"), dict)
                or not all(isinstance(v, str) for v in body["files"].values())):
            raise ValueError("not a backup manifest")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise IntegrityError(f"the manifest of backup {shown} is unreadable or altered ({exc})",
                             REFUSED) from exc
    return body, text, signature


def check(root: Path, shown: Path, expect_fingerprint: str | None = None) -> Sealed:
    """Check the manifest's signature, then that the backup holds exactly its files, each
    unchanged. The key is the backup's own, so its fingerprint is returned to be compared
    with the one printed at `appliance init` (or `expect_fingerprint`, checked here)."""
    layout = HomeLayout(root)
    if not (root / MANIFEST).is_file():
        raise InvalidInput(f"{shown} is not an appliance backup (it has no {MANIFEST})",
                           "pass a directory written by `appliance backup create`; one made before "
                           "backups had manifests cannot be verified: make a new one")
    body, text, signature = _read(root / MANIFEST, shown)
    if not layout.public_key.is_file():
        raise InvalidInput(f"{shown} is not an appliance backup (it has no public key "
                           f"{layout.public_key.relative_to(root)})",
                           "pass a whole directory written by `appliance backup create`")
    try:
        key = load_public_pem(layout.public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"the public key in backup {shown} is unreadable", REFUSED
                             ) from exc
    fp = fingerprint(key)
    if body["key_id"] != fp or not verify_signature(key, signature, text.encode("utf-8")):
        raise IntegrityError(f"the manifest of backup {shown} is not signed by its key",
                             REFUSED)
    if expect_fingerprint is not None and _plain(expect_fingerprint) != fp:
        raise IntegrityError(
            f"backup {shown} is signed by appliance key {fp}, not the expected one",
            "do not restore it; check the fingerprint printed when the appliance was set up")
    files, dirs, other = _walk(root)
    listed: dict[str, str] = body["files"]
    extra = sorted(set(files) - set(listed) - {MANIFEST}) + other + sorted(
        d for d in dirs if not any(f.startswith(d + "/") for f in listed))
    if extra:
        raise IntegrityError(f"backup {shown} holds {extra[0]}, which its manifest does not "
                             "list", REFUSED)
    for rel, digest in sorted(listed.items()):
        if rel.startswith("store/"):
            named = _OBJECT.fullmatch(rel)
            if named is None or named.group(2) != digest:
                raise IntegrityError(f"{rel} in backup {shown} is not a content-store object "
                                     "named by its SHA-256", REFUSED)
        if rel not in files:
            raise IntegrityError(f"backup {shown} lacks {rel}, which its manifest lists",
                                 REFUSED)
        if _sha256(files[rel]) != digest:
            raise IntegrityError(f"{rel} in backup {shown} was altered since the backup "
                                 "was made", REFUSED)
    try:
        private = SigningKey.load(layout.signing_key)
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"the signing key in backup {shown} is unreadable", REFUSED
                             ) from exc
    if private.key_id != fp:
        raise IntegrityError(f"the signing key in backup {shown} does not match its public "
                             "key", REFUSED)
    return Sealed(fp, tuple(sorted(listed)), "store_objects" in body)
