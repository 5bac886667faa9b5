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

    @property
    def first_finding(self) -> Finding:
        """What was found at the first bad event, for a report that is not ok: findings
        without a place (a removed trigger) and checkpoints are listed before the events."""
        seq = self.first_bad_seq
        return next((f for f in self.findings if f.seq == seq), self.findings[0])

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["first_bad_seq"] = self.first_bad_seq
        return d
