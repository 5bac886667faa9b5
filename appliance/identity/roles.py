"""The permission table: the one place that says which role may do what.

Checked in the service layer for every action (11.10(d), (g)); the CLI and console only
show it. Print it with `appliance users roles`.
"""

from __future__ import annotations

ROLES: dict[str, str] = {
    "it": "hospital IT: finds and imports media, reclaims disk, provisions, runs health checks",
    "admin": "approves or rejects updates and datasets, rolls back",
    "security": "manages user accounts and the trust store",
    "ml": "registers datasets, fine-tunes, evaluates, signs evaluation reports as author",
    "auditor": "reads everything, verifies and exports the audit trail; changes nothing",
}

# permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "status.view": frozenset(ROLES),
    "audit.view": frozenset({"auditor", "admin", "security", "it", "ml"}),
    "audit.verify": frozenset({"auditor", "admin", "security", "it"}),
    "audit.export": frozenset({"auditor", "admin", "security"}),
    "audit.anchor": frozenset({"auditor", "security", "it"}),
    "backup.create": frozenset({"it", "security"}),
    "backup.restore": frozenset({"it", "security"}),
    "users.view": frozenset({"security", "admin", "auditor"}),
    "users.manage": frozenset({"security"}),
    "users.train": frozenset({"admin"}),
    "users.review": frozenset({"security"}),
    "password.change": frozenset(ROLES),
    "signatures.view": frozenset(ROLES),
    "trust.view": frozenset(ROLES),
    "trust.manage": frozenset({"security"}),
    "media.scan": frozenset({"it", "admin"}),
    "media.import": frozenset({"it"}),
    "store.reclaim": frozenset({"it"}),
    "provision.run": frozenset({"it"}),
    "provision.view": frozenset({"it", "admin", "auditor", "security"}),
    "hardware.view": frozenset(ROLES),
    "update.view": frozenset(ROLES),
    "update.approve": frozenset({"admin"}),
    "update.install": frozenset({"admin", "it"}),
    "update.rollback": frozenset({"admin"}),
    "dataset.register": frozenset({"ml"}),
    "dataset.approve": frozenset({"admin"}),
    "finetune.run": frozenset({"ml"}),
    "evaluation.run": frozenset({"ml"}),
    "evaluation.sign": frozenset({"ml"}),
}


# Roles granted only after an admin has recorded the person's training (11.10(i)).
TRAINING_REQUIRED: frozenset[str] = frozenset({"admin"})

# Roles that one person should not hold together (FDA data-integrity guidance: whoever
# controls accounts does not also approve content). The console warns until separated.
SEPARATED: tuple[frozenset[str], ...] = (frozenset({"admin", "security"}),)


def roles_for(permission: str) -> frozenset[str]:
    try:
        return PERMISSIONS[permission]
    except KeyError:
        raise KeyError(f"unknown permission {permission!r}") from None


def granting_role(roles: tuple[str, ...], permission: str) -> str | None:
    """The first of the user's roles that grants the permission, recorded as the actor's role."""
    allowed = roles_for(permission)
    for role in roles:
        if role in allowed:
            return role
    return None


def table() -> list[dict[str, object]]:
    return [{"permission": p, "roles": sorted(r)} for p, r in PERMISSIONS.items()]
