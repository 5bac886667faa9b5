"""Console fixtures: a real appliance with fixed content, fixed ids and a recorded GPU reading.

Snapshots must not change between runs, so the appliance id, session ids and the signing
key are made deterministic here (everything they feed, the hash chain included, follows);
time comes from the stepping clock and the GPUs from a recorded reading (the hardware edge).
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.audit.events import Actor, Event
from appliance.bundle.demo_bundle import DemoBundle, build_demo_bundle
from appliance.context import Appliance
from appliance.hardware import Gpu, GpuInventory, RecordedSource, write_reading
from appliance.identity.session import Session
from appliance.keys import SigningKey
from appliance.services import media, trust, users
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import BUILT
from tests.conftest import ADMIN, PASSWORD
from tui.app import ConsoleApp, build_app

AUDITOR = "audrey"
TERMINAL = "console-test"


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """uuid4 counts up and the appliance key is fixed, so ids and hashes repeat exactly."""
    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter), version=4))
    monkeypatch.setattr(SigningKey, "generate", classmethod(
        lambda cls: cls(ec.derive_private_key(0x5EED_C0FFEE, ec.SECP256R1()))))


@pytest.fixture
def gpu_reading(tmp_path: Path) -> RecordedSource:
    path = tmp_path / "gpus.json"
    h100 = [Gpu(i, "NVIDIA H100 80GB HBM3", f"GPU-0000000{i}", (9, 0), 80 * 1024**3,
                79 * 1024**3) for i in range(2)]
    write_reading(GpuInventory(True, "550.54.15", "12.4", tuple(h100)), path)
    return RecordedSource(path)


@pytest.fixture
def history(appliance: Appliance, admin_session: Session) -> Appliance:
    """A second user and events of every shape the console shows: failures, denials,
    old/new values, a signature manifestation."""
    users.add_user(appliance, admin_session, AUDITOR, "Audrey Auditor", ["auditor"],
                   PASSWORD, "quality audit", must_change_password=False)
    alice = admin_session.actor("admin")
    with appliance.transaction():
        for i in range(3):
            appliance.trail.append(Event(
                action="update.import", actor=Actor("itops", "Ira Tech", "it"),
                target_type="bundle", target_id=f"radiology-{i}", target_digest="ab" * 32,
                details={"size_bytes": 1024 * (i + 1)}, terminal="usb-kiosk"))
        appliance.trail.append(Event(
            action="update.approve", actor=alice, target_type="bundle",
            target_id="radiology-1", target_digest="ab" * 32, reason="validated on site",
            old={"state": "PENDING_APPROVAL"}, new={"state": "APPROVED"},
            signature={"name": "Alice Adams", "username": "alice", "meaning": "approved",
                       "ts": "2026-01-15T09:00:01.000Z", "reason": "validated on site",
                       "record_digest": "cd" * 32},
            terminal=TERMINAL))
        appliance.trail.append(Event(
            action="update.install", actor=alice, target_type="bundle",
            target_id="radiology-2", outcome="failure", reason="health check failed",
            details={"error": "gpu memory"}, terminal=TERMINAL))
    return appliance


@pytest.fixture
def make_console(history: Appliance, clock, gpu_reading: RecordedSource
                 ) -> Iterator[Callable[[], ConsoleApp]]:
    def make() -> ConsoleApp:
        return build_app(history.layout.root, clock, terminal=TERMINAL, gpu_source=gpu_reading)

    yield make


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    """The demo vendor's real signed releases (`make demo`'s: v1, and v2 with a retrained
    adapter), built once with a fixed build time."""
    return build_demo_bundle(tmp_path_factory.mktemp("demo-vendor"), BUILT)


@pytest.fixture
def trusted(history: Appliance, admin_session: Session, demo_bundle: DemoBundle) -> Appliance:
    """The demo vendor's root trusted, signed by alice as security officer (her first
    signature: the statement is acknowledged here)."""
    trust.init_trust(history, admin_session, demo_bundle.root, SignatureRequest(
        "approved", "installer root checked against paper", PASSWORD, ADMIN,
        acknowledge_statement=True), source="installer",
        expect_fingerprint=demo_bundle.fingerprint)
    return history


@pytest.fixture
def imported(trusted: Appliance, make_user, demo_bundle: DemoBundle) -> str:
    """The demo bundle imported by an IT user; returns its ref."""
    result = media.import_bundle(trusted, make_user(["it"], "ivan"), demo_bundle.releases[0])
    return f"{result.name}@{result.version}"


@pytest.fixture
def usb(tmp_path: Path, demo_bundle: DemoBundle) -> Path:
    """A stick holding release 1, a copy of it with one payload byte flipped, and release 2."""
    root = tmp_path / "usb"
    v1, v2 = demo_bundle.releases
    shutil.copytree(v1, root / "a-good")
    bad = shutil.copytree(v1, root / "b-tampered")
    weights = next(bad.rglob("model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    shutil.copytree(v2, root / "c-v2")
    return root
