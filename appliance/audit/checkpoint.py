"""Checkpoints: the chain head and Merkle root, signed by the appliance key.

Written after every electronic signature, every N events or M minutes, and at every
export. An anchor is a checkpoint copied to external media: it catches truncation and
the replacement of the whole database by an older copy, which the chain alone cannot.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm

from appliance.audit.merkle import Frontier
from appliance.canonical import canonical_bytes
from appliance.clock import format_ts, parse_ts
from appliance.durable import write_atomic
from appliance.errors import ApplianceError, InvalidInput
from appliance.keys import SigningKey, load_public_pem, public_pem, verify_signature

ANCHOR_FORMAT = "appliance-audit-anchor/1"


@dataclass(frozen=True)
class Checkpoint:
    id: int
    tree_size: int
    body: dict[str, Any]
    text: str
    signature: str
    frontier: bytes

    @property
    def head_hash(self) -> str:
        return self.body["head_hash"]

    @property
    def merkle_root(self) -> str:
        return self.body["merkle_root"]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    every_events: int = 1000
    every_seconds: int = 300

    def deadline_after(self, checkpoint_ts: str | None) -> str:
        """When the next time-based checkpoint falls due after one written at this time; at
        once ("") when there is none yet, or after a stored time not of the stored form
        (only tampering writes one, and verify reports it) rather than failing every append."""
        try:
            return format_ts(parse_ts(checkpoint_ts) + timedelta(seconds=self.every_seconds))
        except (ValueError, TypeError):
            return ""


def _row(row: tuple) -> Checkpoint:
    """A stored checkpoint; an unreadable body reads as empty, which no signature covers."""
    cid, size, text, sig, frontier = row
    body = _json_or_none(text) if isinstance(text, str) else None
    return Checkpoint(cid, size, body if isinstance(body, dict) else {}, text, sig, frontier)


_CHECKPOINTS = "SELECT id, tree_size, body, signature, frontier FROM audit_checkpoints "
_RAW_CHECKPOINTS = ("SELECT id, tree_size, CAST(body AS BLOB), CAST(signature AS BLOB), "
                    "frontier FROM audit_checkpoints ")


def _rows(conn: sqlite3.Connection, order: str) -> list[tuple]:
    """Stored checkpoint rows; a body or signature that is not UTF-8 (only tampering makes
    one) reads as None, so verify reports the checkpoint instead of failing on it."""
    try:
        return conn.execute(_CHECKPOINTS + order).fetchall()
    except sqlite3.OperationalError:  # "Could not decode to UTF-8"
        return [(cid, size, decoded(body), decoded(sig), frontier)
                for cid, size, body, sig, frontier
                in conn.execute(_RAW_CHECKPOINTS + order).fetchall()]


def decoded(raw: object) -> str | None:
    """Stored bytes as text; None when they are not UTF-8 (or not bytes at all)."""
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else None
    except UnicodeDecodeError:
        return None


def latest(conn: sqlite3.Connection) -> Checkpoint | None:
    rows = _rows(conn, "ORDER BY id DESC LIMIT 1")
    return _row(rows[0]) if rows else None


def all_checkpoints(conn: sqlite3.Connection) -> list[Checkpoint]:
    return [_row(r) for r in _rows(conn, "ORDER BY id")]


@dataclass
class Checkpointer:
    key: SigningKey
    appliance_id: str

    def write(self, conn: sqlite3.Connection, ts: str, reason: str) -> Checkpoint:
        """Extend the previous checkpoint's Merkle frontier with the events since, and sign."""
        prev = conn.execute("SELECT tree_size, frontier FROM audit_checkpoints "
                            "ORDER BY id DESC LIMIT 1").fetchone()
        frontier = Frontier.from_bytes(*prev) if prev else Frontier()
        head_row = conn.execute(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        size, head = head_row if head_row else (0, bytes(32))
        if prev is not None and frontier.size == size:
            kept = latest(conn)  # nothing new to sign
            assert kept is not None
            return kept
        frontier.extend(data for (data,) in conn.execute(
            "SELECT CAST(body AS BLOB) FROM audit_events WHERE seq > ? ORDER BY seq",
            (frontier.size,)))
        body = {
            "appliance_id": self.appliance_id,
            "tree_size": size,
            "head_hash": head.hex(),
            "merkle_root": frontier.root().hex(),
            "ts": ts,
            "key_id": self.key.key_id,
            "reason": reason,
        }
        text = canonical_bytes(body).decode("utf-8")
        signature = self.key.sign(text.encode("utf-8"))
        cur = conn.execute(
            "INSERT INTO audit_checkpoints (tree_size, body, signature, frontier) "
            "VALUES (?, ?, ?, ?)",
            (size, text, signature, frontier.to_bytes()),
        )
        return Checkpoint(cur.lastrowid, size, body, text, signature, frontier.to_bytes())


def anchor_document(cp: Checkpoint, key: SigningKey) -> dict[str, Any]:
    """What goes on external media: the signed checkpoint and the public key that signed it."""
    return {
        "format": ANCHOR_FORMAT,
        "checkpoint": cp.body,
        "checkpoint_text": cp.text,
        "signature": cp.signature,
        "public_key_pem": public_pem(key.public).decode(),
    }


def anchor_path(doc: dict[str, Any], to: Path) -> Path:
    """`to` itself, or in a directory a name that says whose trail and how far it reaches."""
    if to.is_dir():
        cp = doc["checkpoint"]
        return to / f"audit-anchor-{cp['appliance_id'][:8]}-{cp['tree_size']:09d}.json"
    return to


def write_anchor(doc: dict[str, Any], to: Path) -> Path:
    path = anchor_path(doc, to)
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"))
    return path


@dataclass(frozen=True)
class Anchor:
    body: dict[str, Any]
    text: str
    signature: str
    public_key_pem: str

    @property
    def tree_size(self) -> int:
        return int(self.body["tree_size"])


def read_anchor(path: Path) -> Anchor:
    """Read and check an anchor file: it must be self-consistent and correctly signed. It
    comes from external media, so every field is checked for its type before use."""
    hint = "pass the anchor file written by `appliance audit anchor`"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        anchor = Anchor(doc["checkpoint"], doc["checkpoint_text"], doc["signature"],
                        doc["public_key_pem"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInput(f"cannot read anchor {path}: {exc}", hint) from exc
    body = anchor.body
    if (doc.get("format") != ANCHOR_FORMAT or not isinstance(body, dict)
            or not all(isinstance(v, str) for v in (anchor.text, anchor.signature,
                                                    anchor.public_key_pem))
            or type(body.get("tree_size")) is not int or body["tree_size"] < 0
            or not isinstance(body.get("head_hash"), str)
            or _json_or_none(anchor.text) != body):
        raise InvalidInput(f"anchor {path} is not a valid anchor document", hint)
    try:
        key = load_public_pem(anchor.public_key_pem.encode("utf-8"))
        signed = anchor.text.encode("utf-8")
    except (ValueError, UnsupportedAlgorithm, ApplianceError) as exc:  # lone surrogates too
        raise InvalidInput(f"anchor {path} does not hold a usable public key", hint) from exc
    if not verify_signature(key, anchor.signature, signed):
        raise InvalidInput(f"anchor {path} has a bad signature",
                           "the anchor was altered; use the copy kept off the appliance")
    return anchor


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
        return None
