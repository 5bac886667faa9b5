"""The self-contained demo appliance behind `make demo`: fixed demo users and some history.

The history is made by the real services with the demo users' real signatures: the demo
vendor's root trusted by the security officer, release 1 imported by IT, checked, approved
by the admin and installed (ACTIVE), and release 2 imported and checked, so it waits for
the admin's signature (PENDING_APPROVAL) when the console opens. The hardware fit is read
from this host: without an NVIDIA driver the CPU profile is chosen, and the view says why.

Demo passwords are printed on purpose; a real appliance is created with `appliance init`.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.audit.events import SYSTEM_ACTOR, Event
from appliance.context import Appliance
from appliance.errors import AlreadyInitialised, UpdateRefused
from appliance.hardware import GpuSource
from appliance.home import HomeLayout
from appliance.identity.session import Session
from appliance.services import audit as audit_service
from appliance.services import auth, users
from appliance.services.setup import init_appliance
from appliance.settings import EvaluationGates, PasswordPolicy, Settings


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

# The demo hospital's quality unit set these at install (recorded in appliance.init).
DEMO_GATES = EvaluationGates(require_evidence=True, min_metrics={"exact_match": 0.85},
                             max_metrics={"hallucination_rate": 0.05})
# The demo's passwords are published, so they never expire: the logins `make demo` prints
# work whenever the demo is opened again, months later too.
DEMO_SETTINGS = Settings(evaluation=DEMO_GATES, password=PasswordPolicy(max_age_days=0))


def mark_demo(app: Appliance) -> None:
    """Record that this appliance is the demo, whose passwords are published (the console's
    login screen then shows them); the trail says so too."""
    with app.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('demo', ?)",
                     (app.clock.iso(),))
        app.trail.append(Event(
            action="appliance.demo", actor=SYSTEM_ACTOR, target_type="appliance",
            target_id=app.appliance_id, reason="demo appliance: its passwords are published",
            details={"users": [u.username for u in DEMO_USERS]}, terminal=app.terminal))


def demo_logins(app: Appliance) -> tuple[DemoUser, ...]:
    """The demo users if this appliance is the demo (its set-up marked it), else none."""
    row = app.conn.execute("SELECT 1 FROM meta WHERE key = 'demo'").fetchone()
    return DEMO_USERS if row else ()


def demo_ready(app: Appliance) -> bool:
    """Whether the demo's set-up finished (its last step marks it)."""
    return app.conn.execute("SELECT 1 FROM meta WHERE key = 'demo_ready'").fetchone() is not None


def ensure_demo(home: Path, source: GpuSource | None = None) -> bool:
    """Create the demo appliance unless it exists; returns whether it was created. A demo
    whose set-up did not finish (killed half-way) is made again; an appliance that is not
    the demo is refused, never changed. A set-up that fails removes what it made, so the
    next `make demo` starts clean. `source` is where the GPU reading comes from (None:
    this host, through NVML)."""
    home = Path(home)
    if HomeLayout(home).exists():
        with Appliance.open(home) as app:
            if not demo_logins(app):
                raise AlreadyInitialised(f"{home} holds an appliance that is not the demo",
                                         "give the demo a home of its own with --home; "
                                         "nothing was changed")
            if demo_ready(app):
                return False
        _clear(home)                    # the demo, half made: start again
    created_root = not home.exists()
    first = DEMO_USERS[0]
    app = init_appliance(home, first.username, first.full_name, first.password,
                         settings=DEMO_SETTINGS, terminal="demo-setup")
    try:
        mark_demo(app)
        admin = auth.login(app, first.username, first.password)
        for u in DEMO_USERS[1:]:
            users.add_user(app, admin, u.username, u.full_name, list(u.roles), u.password,
                           "demo user", must_change_password=False)
        sessions = {first.username: admin}
        for u in DEMO_USERS[1:]:
            sessions[u.username] = auth.login(app, u.username, u.password)
        _update_history(app, sessions, home, source)
        audit_service.verify(app, admin)
        with app.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('demo_ready', ?)",
                         (app.clock.iso(),))
    except BaseException:
        app.close()
        if created_root:
            shutil.rmtree(home, ignore_errors=True)
        else:
            _clear(home)
        raise
    app.close()
    return True


def _clear(home: Path) -> None:
    """Empty the demo's home (`lost+found` aside), which holds only what the set-up made."""
    for entry in home.iterdir():       # what cannot be removed, `init` then refuses in one line
        if entry.name == "lost+found":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _sign(user: DemoUser, meaning: str, reason: str):
    from appliance.services.signing import SignatureRequest

    return SignatureRequest(meaning, reason, user.password, user.username,
                            acknowledge_statement=True)


def _update_history(app: Appliance, sessions: dict[str, Session], home: Path,
                    source: GpuSource | None) -> None:
    """Publish the demo vendor's releases, trust its root and bring them through the update
    lifecycle: the same services and signatures a hospital uses."""
    from appliance.bundle.demo_bundle import build_demo_bundle
    from appliance.services import media, trust, updates
    from appliance.updates.install import Edges

    demo = build_demo_bundle(home / "demo-vendor")
    security = next(u for u in DEMO_USERS if "security" in u.roles)
    approver = next(u for u in DEMO_USERS if "admin" in u.roles)
    it = sessions[next(u for u in DEMO_USERS if "it" in u.roles).username]
    admin = sessions[approver.username]
    trust.init_trust(app, sessions[security.username], demo.root, _sign(
        security, "approved", "demo: trust the demo vendor's root"),
        source=str(demo.releases[0]), expect_fingerprint=demo.fingerprint)

    def import_and_check(path: Path) -> str:
        imported = media.import_bundle(app, it, path)
        ref = f"{imported.name}@{imported.version}"
        bundle = updates.check(app, it, ref)     # IMPORTED -> ... -> PENDING_APPROVAL
        if str(bundle.state) != "PENDING_APPROVAL":
            raise UpdateRefused(f"demo bundle {ref} is {bundle.state}: {bundle.state_reason}",
                                "the demo vendor's release is broken; report it")
        return ref

    *earlier, latest = demo.releases
    for path in earlier:
        ref = import_and_check(path)
        updates.show(app, admin, ref, source=source)    # opened before signing (recorded)
        updates.approve(app, admin, ref, _sign(
            approver, "approved", "demo: evidence meets the gates; profile fits this host"),
            source=source)
        result = updates.install(app, it, ref, Edges(source=source))
        if result.outcome != "activated":
            raise UpdateRefused(f"demo install of {ref} ended {result.outcome}: "
                                f"{result.reason}", "see `appliance update status`")
    import_and_check(latest)
