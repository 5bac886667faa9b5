"""What `audit verify` found: findings name the kind of tampering and the first bad event."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

GENESIS = bytes(32)


@dataclass(frozen=True)
class Finding:
    kind: str
    seq: int | None
    message: str


@dataclass
class VerifyReport:
    mode: str
    events_checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS.hex()
    checkpoints_checked: int = 0
    start_seq: int = 1
    findings: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.seq is not None]
        return min(seqs) if seqs else None

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["first_bad_seq"] = self.first_bad_seq
        return d
