"""The approval view's parts: version against the active release, a component-level diff,
the signers, and the bundle's own audit history. Pure reads; the service records the view.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.updates.lifecycle import BundleRecord, ComponentRecord


def version_line(bundle: BundleRecord, active: BundleRecord | None) -> dict[str, Any]:
    if active is None:
        relation = "first install: nothing is active"
    elif active.id == bundle.id:
        relation = "this is the active release"
    elif active.name != bundle.name:
        relation = f"replaces {active.ref} (another bundle)"
    elif bundle.version > active.version:
        relation = f"upgrade from version {active.version}"
    else:
        relation = f"older than the active version {active.version}"
    return {"version": bundle.version, "active": active.ref if active else None,
            "active_version": active.version if active else None,
            "active_digest": active.digest if active else None, "relation": relation}


def _entry(c: ComponentRecord, bases: dict[str, str]) -> dict[str, Any]:
    d: dict[str, Any] = {"name": c.name, "kind": c.kind, "digest": c.digest, "size": c.size,
                         "files": len(c.files)}
    if c.base_model:
        base = c.base_model
        d["base_model"] = {**base, "available": base["digest"] in bases,
                           "where": bases.get(base["digest"], "missing")}
    if c.kind == "trtllm_engine":
        d["engine"] = c.info.get("engine")
    return d


def component_diff(bundle: BundleRecord, active: BundleRecord | None,
                   external: list[ComponentRecord]) -> list[dict[str, Any]]:
    """Each component: added, changed (digest differs), unchanged or removed against the
    active release, with sizes and, for adapters, the base model and where it comes from."""
    bases = {c.digest: "this bundle" for c in bundle.components if c.kind == "base_model"}
    bases.update({c.digest: "installed" for c in external if c.digest not in bases})
    old = {c.name: c for c in active.components} if active and active.id != bundle.id else {}
    rows = []
    for c in bundle.components:
        prev = old.get(c.name)
        change = "added" if prev is None else ("unchanged" if prev.digest == c.digest
                                               else "changed")
        row = {"change": change, **_entry(c, bases)}
        if change == "changed":
            row["old_digest"], row["old_size"] = prev.digest, prev.size
        rows.append(row)
    for name, c in sorted(old.items()):
        if bundle.component(name) is None:
            rows.append({"change": "removed", **_entry(c, bases)})
    return rows


def signers(bundle: BundleRecord) -> list[dict[str, Any]]:
    """Who signed each component (the publisher's keys, named by key id or identity)."""
    out = []
    for c in bundle.components:
        s = c.info.get("signer", {})
        out.append({"component": c.name, "role": c.role, "method": s.get("method"),
                    "keyid": s.get("keyid"), "identity": s.get("identity"),
                    "issuer": s.get("issuer")})
    return out


def history(conn: sqlite3.Connection, bundle: BundleRecord) -> list[dict[str, Any]]:
    """Every audit event on this bundle, oldest first, with signature manifestations."""
    rows = conn.execute("SELECT body FROM audit_events WHERE target_type = 'bundle' AND "
                        "target_id = ? ORDER BY seq", (bundle.ref,)).fetchall()
    out = []
    for (body,) in rows:
        e = json.loads(body)
        sig = e.get("signature")
        out.append({"seq": e["seq"], "ts": e["ts"], "action": e["action"],
                    "actor": e["actor"]["username"], "actor_name": e["actor"]["name"],
                    "outcome": e["outcome"], "reason": e.get("reason"),
                    "signature": None if not sig else
                    f"{sig['meaning']} by {sig['name']} ({sig['username']}) at {sig['ts']}"})
    return out
