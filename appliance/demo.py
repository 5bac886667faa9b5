"""The self-contained demo appliance behind `make demo`: fixed demo users and some history.

Demo passwords are printed on purpose; a real appliance is created with `appliance init`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.home import HomeLayout
from appliance.services import audit as audit_service
from appliance.services import auth, users
from appliance.services.setup import init_appliance


@dataclass(frozen=True)
class DemoUser:
    username: str
    full_name: str
    roles: tuple[str, ...]
    password: str


DEMO_USERS = (
    DemoUser("admin", "Dana Admin", ("admin", "security"), "demo-pass-dana"),
    DemoUser("itops", "Ira Tech", ("it",), "demo-pass-ira"),
    DemoUser("mleng", "Mina Learner", ("ml",), "demo-pass-mina"),
    DemoUser("auditor", "Ada Auditor", ("auditor",), "demo-pass-ada"),
)


def ensure_demo(home: Path) -> bool:
    """Create the demo appliance unless it exists; returns whether it was created."""
    if HomeLayout(Path(home)).exists():
        return False
    first = DEMO_USERS[0]
    app = init_appliance(home, first.username, first.full_name, first.password,
                         terminal="demo-setup")
    try:
        admin = auth.login(app, first.username, first.password)
        for u in DEMO_USERS[1:]:
            users.add_user(app, admin, u.username, u.full_name, list(u.roles), u.password,
                           "demo user", must_change_password=False)
        for u in DEMO_USERS[1:]:
            auth.login(app, u.username, u.password)
        _import_demo_bundle(app, admin, Path(home))
        audit_service.verify(app, admin)
    finally:
        app.close()
    return True


def _import_demo_bundle(app, admin, home: Path) -> None:
    """Publish the demo vendor's bundle, trust its root and import it: the same services a
    hospital uses (trust init signed by the security officer, import by IT)."""
    from appliance.bundle.demo_bundle import build_demo_bundle
    from appliance.services import media, trust
    from appliance.services.signing import SignatureRequest

    demo = build_demo_bundle(home / "demo-vendor")
    first = DEMO_USERS[0]
    trust.init_trust(app, admin, demo.root, SignatureRequest(
        "approved", "demo: trust the demo vendor's root", first.password, first.username,
        acknowledge_statement=True), source=str(demo.media), expect_fingerprint=demo.fingerprint)
    it = next(u for u in DEMO_USERS if "it" in u.roles)
    media.import_bundle(app, auth.login(app, it.username, it.password), demo.media)
