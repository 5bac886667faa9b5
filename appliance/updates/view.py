"""The approval view's parts: version against the active release, a component-level diff,
the signers, and the bundle's own audit history. Pure reads; the service records the view.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.audit import query
from appliance.audit.query import EventFilter
from appliance.hardware import replayed_note
from appliance.text import shown
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
    out = []
    for stored in query.events(conn, EventFilter(target_type="bundle", target_id=bundle.ref)):
        e = stored.data
        sig = e.get("signature")
        out.append({"seq": e["seq"], "ts": e["ts"], "action": e["action"],
                    "actor": e["actor"]["username"], "actor_name": e["actor"]["name"],
                    "outcome": e["outcome"], "reason": e.get("reason"),
                    "signature": None if not sig else
                    f"{sig['meaning']} by {sig['name']} ({sig['username']}) at {sig['ts']}"})
    return out


def view_text(v: dict[str, Any]) -> str:
    """The approval view as plain text (the CLI prints it; the console shows it)."""
    b = v["bundle"]
    lines = [f"{b['ref']}  {b['state']}  digest {b['digest']}",
             f"publisher: {v['publisher']}   imported {b['imported_at']} by {b['imported_by']}",
             f"version {v['version']['version']}: {v['version']['relation']}"]
    if b.get("state_reason"):
        lines.append(f"reason: {b['state_reason']}")
    lines.append("signers:")
    lines += [f"  {s['component']:<20} {s['method']} {s['keyid'] or s['identity']}"
              for s in v["signers"]]
    lines.append("components (against the active release):")
    for c in v["components"]:
        base = c.get("base_model")
        extra = f"  needs base {base['name']} ({base['where']})" if base else ""
        lines.append(f"  {c['change']:<9} {c['name']:<20} {c['kind']:<19} {c['size']:>12} B "
                     f"{c['files']:>4} files{extra}")
    hw = v["hardware"]
    lines.append(f"hardware: {hw['note']}{replayed_note(hw.get('source', 'nvml'))}")
    lines += [f"  {'fits' if c['fits'] else 'no  '} {c['profile_id']}: {c['reason']}"
              for c in hw["candidates"]]
    ev = v["evaluation"]
    if ev:
        lines.append(f"evaluation ({ev['gate']}): {'passed' if ev['passed'] else 'FAILED'}")
        lines += [f"  evidence {e['component']} on {e['golden_set']} ({e['samples']} samples): "
                  + ", ".join(f"{k} {val}" for k, val in sorted(e["metrics"].items()))
                  for e in ev["evidence"]]
        lines += [f"  {c['metric']} = {c['value']} ({c['bound']} {c['threshold']}) "
                  f"{'ok' if c['ok'] else 'FAILS'}" for c in ev["checks"]]
        lines += [f"  {r}" for r in ev["reasons"]]
    ap = v["approvals"]
    lines.append(f"approvals: {len(ap['signatures'])} of {ap['required']}")
    lines += [f"  {s['meaning']} by {s['name']} ({s['username']}) at {s['ts']}: {s['reason']}"
              for s in ap["signatures"]]
    lines.append("history:")
    lines += [f"  {h['seq']:>6} {h['ts']} {h['action']:<26} {h['actor']:<10} {h['outcome']}"
              + (f"  [{h['signature']}]" if h["signature"] else "")
              + (f"  {h['reason']}" if h["reason"] else "") for h in v["history"]]
    return "\n".join(shown(line) for line in lines)  # names and reasons come from media


def install_text(r: dict[str, Any]) -> str:
    """An install or rollback result as plain text."""
    lines = [f"{r['bundle']}: {r['outcome']} ({r['op']} of release {r['release']}, "
             f"previous {r['previous'] or 'none'})"]
    if r["placement"]:
        p = r["placement"]
        lines.append(f"  layout: {p['hardlink']} hard links, {p['reflink']} reflinks, "
                     f"{p['copy']} copies ({p['copied_bytes']} bytes copied)"
                     + ("; releases/ is on another file system than the store"
                        if p["cross_filesystem"] else ""))
    lines += [f"  restart: {x['detail']}" for x in r["restarts"]]
    lines += [f"  {'ok  ' if h['ok'] else 'FAIL'} {h['name']}: {h['detail']}"
              for h in r["health"]]
    if r["reason"]:
        lines.append(f"  reason: {r['reason']}")
    return "\n".join(lines)
