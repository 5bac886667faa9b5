"""End-to-end import of real signed bundles: trust init, scan, import, re-import, updates."""

from __future__ import annotations

import json

import pytest

from appliance.bundle.store import ContentStore
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import full_release, new_publisher, session_keys
from tests.conftest import PASSWORD


@pytest.fixture
def keys(tmp_path_factory):
    return session_keys(tmp_path_factory.getbasetemp())


@pytest.fixture
def vendor(tmp_path, keys):
    return new_publisher(tmp_path, keys)


@pytest.fixture
def first_media(tmp_path, vendor):
    return full_release(vendor, tmp_path / "usb1")


@pytest.fixture
def security(make_user):
    return make_user(["security"], "sam")


@pytest.fixture
def itop(make_user):
    return make_user(["it"], "ivan")


def sign_req(user: str) -> SignatureRequest:
    return SignatureRequest("approved", "initial trust from installer media", PASSWORD, user,
                            acknowledge_statement=True)


@pytest.fixture
def trusted(appliance, security, first_media):
    root = (first_media / "metadata" / "1.root.json").read_bytes()
    trust_service.init_trust(appliance, security, root, sign_req("sam"), "installer")
    return appliance


def test_import_complete_bundle(trusted, itop, first_media):
    app = trusted
    result = media_service.import_bundle(app, itop, first_media)
    assert result.state == "IMPORTED" and not result.already_imported
    assert result.name == "demo-clinical" and result.version == 1
    assert result.files_copied == 9 and result.copied_bytes > 0
    store = ContentStore(app.layout.store)
    rows = app.conn.execute("SELECT kind, files FROM bundle_components ORDER BY name").fetchall()
    assert sorted(k for k, _ in rows) == ["base_model", "golden_set", "lora_adapter",
                                          "trtllm_engine"]
    for _, files in rows:
        for _rel, digest, _size in json.loads(files):
            assert store.has(digest)
    event = app.conn.execute("SELECT body FROM audit_events WHERE action = 'media.import'"
                             ).fetchone()
    assert json.loads(event[0])["outcome"] == "success"
    again = media_service.import_bundle(app, itop, first_media)
    assert again.already_imported and again.copied_bytes == 0
