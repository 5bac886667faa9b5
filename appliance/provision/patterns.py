"""Which hosts a --limit selects, read as Ansible reads it (`InventoryManager.subset`) for a
play on `all` over our inventories, whose only groups are `all` and `ungrouped`."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from appliance.provision.inventory import GROUPS

_HOST_PORT = re.compile(r"[A-Za-z0-9._-]+:[0-9]+")


def terms(limit: str) -> list[str]:
    """A limit's terms as Ansible splits them: at commas if it holds one, else at colons,
    except that `host:port` is one term (`split_host_pattern`)."""
    if "," in limit:
        parts = limit.split(",")
    elif _HOST_PORT.fullmatch(limit):
        parts = [limit]
    else:
        parts = limit.split(":")
    return [p.strip() for p in parts if p.strip()]


def selected(limit: str | None, hosts: Sequence[str]) -> tuple[str, ...]:
    """The hosts of `hosts` (in their order) a run reaches under `limit`: the plain terms
    first, then `&` intersections, then `!` exclusions, whatever order they were typed in,
    and `all` when only the latter were given (`order_patterns`)."""
    if not limit:
        return tuple(hosts)
    given = terms(limit)
    ordered = ([t for t in given if t[0] not in "!&"] or ["all"]) \
        + [t for t in given if t[0] == "&"] + [t for t in given if t[0] == "!"]
    chosen: list[str] = []
    for term in ordered:
        if term in hosts:
            matched = [term]
        else:
            matched = _matches(term[1:] if term[0] in "!&" else term, hosts)
        if term[0] == "!":
            chosen = [h for h in chosen if h not in matched]
        elif term[0] == "&":
            chosen = [h for h in chosen if h in matched]
        else:
            chosen += [h for h in matched if h not in chosen]
    return tuple(h for h in hosts if h in chosen)


def _matches(pattern: str, hosts: Sequence[str]) -> list[str]:
    """A glob matching a group's name (`a*` matches `all`) selects its hosts: every one."""
    rx = re.compile(fnmatch.translate(pattern))
    if any(rx.match(g) for g in GROUPS):
        return list(hosts)
    return [h for h in hosts if rx.match(h)]
