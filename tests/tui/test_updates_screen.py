"""SVG snapshots of the Updates screen at 80x24 and 120x40: bundles in three states with the
pending one's approval view open, and the approval's signature dialog.

The screen shows bundle digests and the publisher's key ids. A bundle's digest covers its
model signatures' bytes, which change on every run twice over: a fresh ECDSA nonce, and the
signed statement's keys in the order of protobuf's map, which differs between processes.
So this module's demo vendor has fixed keys, signs with deterministic ECDSA (RFC 6979)
and writes the statement's keys sorted: real signatures the importer verifies, the same
bytes on every run.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from textual.widgets import DataTable

from appliance.bundle import keys as bkeys
from appliance.bundle.demo_bundle import (
    KEY_NAMES,
    RELEASES,
    DemoBundle,
    DemoRelease,
    build_demo_bundle,
)
from appliance.context import Appliance
from appliance.hardware import RecordedSource
from appliance.identity.session import Session
from appliance.services import media, updates
from appliance.updates.install import Edges
from tests.bundle.bundlekit import BUILT
from tests.conftest import ADMIN, PASSWORD, SteppingClock
from tests.tui.pilot import dashboard_ready, fill, log_in, text_of, wait_for
from tests.updates.kit import approve, sign_req
from tui.screens.signature import SignatureDialog
from tui.screens.updates import UpdatesScreen

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
THIRD = DemoRelease(3, 7, 0.93, 0.01, "Demo bundle 3: the adapter retrained again")
PENDING = "demo-clinical@3"


@pytest.fixture
def clock() -> SteppingClock:
    """A clock that stands still (the dashboard's workers read it concurrently)."""
    still = SteppingClock()
    still.step = timedelta(0)
    return still


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    """The demo vendor's releases 1 to 3, from fixed keys and deterministic signatures."""
    work = tmp_path_factory.mktemp("fixed-vendor")
    for i, name in enumerate(KEY_NAMES, 1):
        key = ec.derive_private_key(0xD3_0000 + i, ec.SECP256R1())
        path = work / "keys" / f"{name}.pem"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        bkeys.public_path_for(path).write_bytes(bkeys.public_pem(key.public_key()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ec.ECDSA, "deterministic_signing", property(lambda self: True))
        mp.setattr(json_format, "MessageToJson",
                   functools.partial(json_format.MessageToJson, sort_keys=True))
        return build_demo_bundle(work, BUILT, (*RELEASES, THIRD))


@pytest.fixture
def states(trusted: Appliance, admin_session: Session, make_user, demo_bundle: DemoBundle,
           gpu_reading: RecordedSource) -> list[str]:
    """Release 1 ACTIVE, 2 REJECTED by alice's signature, 3 PENDING_APPROVAL."""
    ivan = make_user(["it"], "ivan")
    refs = []
    for path in demo_bundle.releases:
        r = media.import_bundle(trusted, ivan, path)
        refs.append(f"{r.name}@{r.version}")
        assert str(updates.check(trusted, ivan, refs[-1]).state) == "PENDING_APPROVAL"
    approve(trusted, admin_session, refs[0], gpu_reading)
    assert updates.install(trusted, ivan, refs[0], Edges(source=gpu_reading)).outcome \
        == "activated"
    updates.show(trusted, admin_session, refs[1], source=gpu_reading)
    updates.reject(trusted, admin_session, refs[1], sign_req(
        ADMIN, "rejected", "misreads dosages in the golden set"))
    return refs


async def _pending_opened(pilot) -> None:
    await log_in(pilot, ADMIN, PASSWORD)
    await dashboard_ready(pilot)
    await pilot.press("b")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, UpdatesScreen)
                   and pilot.app.screen.query_one(DataTable).row_count == 3)
    table = pilot.app.screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(PENDING))
    await pilot.press("o")
    await wait_for(pilot, lambda: text_of(pilot, "#upd-message")
                   == f"{PENDING}: PENDING_APPROVAL (opened; recorded)")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    assert [str(table.get_cell_at((i, 1))) for i in range(3)] == [
        "PENDING_APPROVAL", "REJECTED", "ACTIVE"]


async def _approval_asked(pilot) -> None:
    await _pending_opened(pilot)
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SignatureDialog))
    await fill(pilot, "#sig-reason", "evidence meets the gates")


@SIZES
def test_updates_screen_with_the_pending_bundle_opened(snap_compare, make_console, states,
                                                       size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_pending_opened)


@SIZES
def test_updates_approval_signature_dialog(snap_compare, make_console, states, size):
    assert snap_compare(make_console(), terminal_size=size, run_before=_approval_asked)
