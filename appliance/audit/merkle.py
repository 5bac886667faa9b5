"""RFC 6962 Merkle tree hashing, kept as a frontier of perfect-subtree roots.

The frontier lets a checkpoint extend the previous one's tree with only the new events,
and lets later work produce inclusion and consistency proofs in the RFC 6962 style.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The roots of the perfect subtrees that make up a tree of `size` leaves, largest first."""

    def __init__(self, size: int = 0, roots: list[bytes] | None = None) -> None:
        self.size = size
        self.roots = list(roots or [])
        if len(self.roots) != bin(size).count("1"):
            raise ValueError("frontier does not match its tree size")

    def push_leaf_hash(self, h: bytes) -> None:
        size = self.size
        roots = self.roots
        while size & 1:
            h = hashlib.sha256(b"\x01" + roots.pop() + h).digest()
            size >>= 1
        roots.append(h)
        self.size += 1

    def push(self, data: bytes) -> None:
        self.push_leaf_hash(leaf_hash(data))

    def extend(self, leaves: Iterable[bytes]) -> None:
        """`push` each leaf (a checkpoint folds in the events since the last one)."""
        self.extend_hashes([leaf_hash(data) for data in leaves])

    def extend_hashes(self, level: list[bytes]) -> None:
        """Push these leaf hashes (the list is used up), one tree level at a time: at each
        level the frontier's root there (if any) goes in front, the nodes pair off, and an
        odd one left over is the new tree's root at that level. The same hashes as pushing
        one by one, with a loop per level instead of per node (every 1,000th append folds
        1,000 leaves)."""
        roots, size, kept = self.roots, self.size, []
        self.size = size + len(level)
        while level:
            if size & 1:
                level.insert(0, roots.pop())
            if len(level) & 1:
                kept.append(level.pop())
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            size >>= 1
        roots.extend(reversed(kept))

    def root(self) -> bytes:
        """Fold right to left: RFC 6962 splits at the largest power of two below n."""
        if not self.roots:
            return EMPTY_ROOT
        r = self.roots[-1]
        for s in reversed(self.roots[:-1]):
            r = node_hash(s, r)
        return r

    def to_bytes(self) -> bytes:
        return b"".join(self.roots)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) % 32:
            raise ValueError("frontier bytes are not whole hashes")
        return cls(size, [data[i:i + 32] for i in range(0, len(data), 32)])


def merkle_root(leaves: list[bytes]) -> bytes:
    """Reference RFC 6962 MTH, recursive; used by tests to check the frontier."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))
