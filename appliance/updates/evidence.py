"""The EVALUATED step: evaluation evidence checked against the gates in configuration.

`EvidenceGate` is the interface; `CarriedEvidenceGate` judges the signed evidence a bundle
carries (component kind `evaluation_evidence`), and the local evaluation harness will be a
second implementation run on the appliance's own golden sets. An evidence component holds
`evidence.json` (signed with the component, so the metrics are the publisher's statement):

    {"schema_version": 1, "golden_set": "<golden_set component name>",
     "golden_set_digest": "<its model-signing digest>", "samples": 200,
     "metrics": {"exact_match": 0.91, "hallucination_rate": 0.02}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from appliance.settings import EvaluationGates
from appliance.updates.lifecycle import BundleRecord

EVIDENCE_FILE = "evidence.json"
MAX_EVIDENCE = 64 * 1024


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    bound: str          # "min" or "max"
    threshold: float
    value: float | None
    ok: bool


@dataclass(frozen=True)
class GateResult:
    passed: bool
    gate: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    checks: list[MetricCheck] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.passed:
            shown = ", ".join(f"{c.metric} {c.value:g} ({'>=' if c.bound == 'min' else '<='} "
                              f"{c.threshold:g})" for c in self.checks if c.value is not None)
            return "evaluation gates passed" + (f": {shown}" if shown else
                                                " (no metric thresholds configured)")
        return "; ".join(self.reasons)


class EvidenceGate(Protocol):
    """Decides VERIFIED -> EVALUATED. `read(sha256)` returns a stored payload file's bytes."""

    name: str

    def evaluate(self, bundle: BundleRecord, read: Callable[[str, int], bytes]) -> GateResult:
        ...


def _finite(value: object) -> bool:
    """A number the gates can compare as a float: an integer too large for one (10**400)
    is as invalid as inf, rather than an OverflowError that leaves the bundle unjudged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _parse(raw: bytes, component: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # also UnicodeDecodeError, an integer of over 4300 digits, and nesting too deep
        return None, f"evidence {component}: {EVIDENCE_FILE} is not JSON ({exc})"
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        return None, f"evidence {component}: {EVIDENCE_FILE} is not schema version 1"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics or not all(
            isinstance(k, str) and _finite(v) for k, v in metrics.items()):
        return None, f"evidence {component}: metrics must map names to finite numbers"
    if not isinstance(data.get("golden_set"), str):
        return None, f"evidence {component}: it does not name its golden set"
    return data, None


def check_evidence(raw: bytes, component: str, golden_sets: dict[str, str]
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """An `evidence.json` against the golden sets its bundle carries (name -> digest): the
    parsed evidence, or what is wrong with it. The gate judges with it at `update check`,
    and `bundle add-component` refuses with it what that would refuse."""
    data, problem = _parse(raw, component)
    if problem:
        return None, problem
    assert data is not None
    digest = golden_sets.get(data["golden_set"])
    if digest is None:
        return None, (f"evidence {component} names golden set {data['golden_set']!r}, which "
                      "this bundle does not carry")
    if data.get("golden_set_digest") != digest:
        return None, (f"evidence {component} was computed on another version of golden set "
                      f"{data['golden_set']} (digest differs)")
    return data, None


@dataclass
class CarriedEvidenceGate:
    """The signed metrics the publisher shipped, judged against this appliance's gates."""

    gates: EvaluationGates
    name: str = "carried-evidence"

    def evaluate(self, bundle: BundleRecord, read: Callable[[str, int], bytes]) -> GateResult:
        reasons: list[str] = []
        evidence: list[dict[str, Any]] = []
        for comp in (c for c in bundle.components if c.kind == "evaluation_evidence"):
            entry = next((f for f in comp.files if f[0] == EVIDENCE_FILE), None)
            if entry is None:
                reasons.append(f"evidence {comp.name} has no {EVIDENCE_FILE}")
                continue
            if entry[2] > MAX_EVIDENCE:
                reasons.append(f"evidence {comp.name}: {EVIDENCE_FILE} is larger than "
                               f"{MAX_EVIDENCE} bytes")
                continue
            data, problem = check_evidence(read(entry[1], entry[2]), comp.name, {
                c.name: c.digest for c in bundle.components if c.kind == "golden_set"})
            if problem:
                reasons.append(problem)
                continue
            assert data is not None
            golden = bundle.component(data["golden_set"])
            assert golden is not None
            evidence.append({"component": comp.name, "component_digest": comp.digest,
                             "golden_set": golden.name, "golden_set_digest": golden.digest,
                             "samples": data.get("samples"), "metrics": data["metrics"]})
        if not evidence and not reasons and self.gates.require_evidence:
            reasons.append("the bundle carries no evaluation evidence, and the gates require it")
        checks = self._thresholds(evidence) if not reasons else []
        reasons += [f"{c.metric} " + ("missing from the evidence" if c.value is None else
                                      f"{c.value:g} is {'below' if c.bound == 'min' else 'above'}"
                                      f" the gate {c.threshold:g}")
                    for c in checks if not c.ok]
        return GateResult(not reasons, self.name, evidence, checks, reasons)

    def _thresholds(self, evidence: list[dict[str, Any]]) -> list[MetricCheck]:
        checks = []
        bounds = [("min", m, t) for m, t in sorted(self.gates.min_metrics.items())] + \
                 [("max", m, t) for m, t in sorted(self.gates.max_metrics.items())]
        for bound, metric, threshold in bounds:
            values = [float(e["metrics"][metric]) for e in evidence if metric in e["metrics"]]
            if not values:
                checks.append(MetricCheck(metric, bound, float(threshold), None, False))
                continue
            # Several evidence files: the worst one decides.
            worst = min(values) if bound == "min" else max(values)
            ok = worst >= threshold if bound == "min" else worst <= threshold
            checks.append(MetricCheck(metric, bound, float(threshold), worst, ok))
        return checks
