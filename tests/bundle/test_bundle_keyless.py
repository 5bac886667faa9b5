"""Keyless (sigstore) vendor components, verified offline against a trusted_root.json that
arrives as a signed TUF target: never sigstore's built-in or cached root, nothing written
to the home or XDG directories, no network."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.bundle import publish
from appliance.bundle.components import verify_sigstore_signature
from appliance.errors import BundleRefused, InvalidInput
from appliance.services import media as media_service
from appliance.services import trust as trust_service
from appliance.services.signing import SignatureRequest
from tests.bundle.bundlekit import new_publisher, session_keys, tiny_base
from tests.bundle.fake_sigstore import FakeSigstore, statement_for
from tests.bundle.hostile import resign
from tests.conftest import PASSWORD

IDENTITY = "release@vendor.example"
ISSUER = "https://login.vendor.example"
SIGNED_AT = datetime(2026, 1, 9, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sigstore() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def keyless_media(tmp_path, tmp_path_factory, sigstore) -> Path:
    keys = session_keys(tmp_path_factory.getbasetemp())
    pub = new_publisher(tmp_path, keys, "keyless")
    base = tiny_base(tmp_path / "src" / "kl-base")
    sig = tmp_path / "kl-base.sig"
    sig.write_bytes(sigstore.sign_statement(statement_for(base), IDENTITY, ISSUER, SIGNED_AT))
    root = tmp_path / "trusted_root.json"
    root.write_bytes(sigstore.trusted_root())
    publish.add_component(pub.repo, "base_model", base, None, name="kl-base",
                          sigstore_signature=sig, identity=IDENTITY, issuer=ISSUER)
    publish.set_trusted_root(pub.repo, root)
    return pub.release(tmp_path / "usb")


@pytest.fixture
def trusted(appliance, make_user, keyless_media):
    security = make_user(["security"], "sam")
    trust_service.init_trust(appliance, security,
                             (keyless_media / "metadata" / "1.root.json").read_bytes(),
                             SignatureRequest("approved", "trust", PASSWORD, "sam",
                                              acknowledge_statement=True))
    return appliance


def _written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for d in ("user-home", "xdg-data",
                                                         "xdg-config", "xdg-cache")
                  if (tmp_path / d).exists() for p in (tmp_path / d).rglob("*"))


def test_keyless_component_imports_offline(trusted, make_user, keyless_media, tmp_path):
    it = make_user(["it"], "ivan")
    result = media_service.import_bundle(trusted, it, keyless_media)
    assert result.state == "IMPORTED" and result.files_copied == 3
    info = json.loads(trusted.conn.execute("SELECT info FROM bundle_components").fetchone()[0])
    assert info["signer"] == {"method": "sigstore", "identity": IDENTITY, "issuer": ISSUER}
    assert _written(tmp_path) == []
    assert "SIGSTORE" not in "".join(os.environ)        # no ambient sigstore configuration


@pytest.mark.parametrize("identity, issuer, root, needle", [
    ("someone@else.example", ISSUER, None, "SANs do not match"),
    (IDENTITY, "https://other-issuer.example", None, "OIDCIssuer does not match"),
    (IDENTITY, ISSUER, "other", "keyless signature does not verify"),
])
def test_keyless_signature_refusals(sigstore, tmp_path, identity, issuer, root, needle):
    base = tiny_base(tmp_path / "b")
    sig = sigstore.sign_statement(statement_for(base), IDENTITY, ISSUER, SIGNED_AT)
    trusted_root = FakeSigstore().trusted_root() if root else sigstore.trusted_root()
    with pytest.raises(BundleRefused, match=needle) as err:
        verify_sigstore_signature(sig, trusted_root, identity, issuer, "component b")
    assert "\n" not in err.value.message


def test_keyless_payload_swap_is_refused(sigstore, tmp_path):
    base = tiny_base(tmp_path / "b")
    sig = json.loads(sigstore.sign_statement(statement_for(base), IDENTITY, ISSUER, SIGNED_AT))
    other = tiny_base(tmp_path / "c", seed=5)
    sig["dsseEnvelope"]["payload"] = base64.b64encode(statement_for(other)).decode()
    with pytest.raises(BundleRefused, match="keyless signature does not verify"):
        verify_sigstore_signature(json.dumps(sig).encode(), sigstore.trusted_root(), IDENTITY,
                                  ISSUER, "component b")


def test_trusted_root_must_be_a_signed_target(trusted, make_user, keyless_media, tmp_path):
    """Swapping trusted_root.json for an attacker's root (who then signs keylessly with
    their own CA) is refused: the file no longer matches its signed hash."""
    it = make_user(["it"], "ivan")
    evil = FakeSigstore()
    (keyless_media / "targets" / "sigstore" / "trusted_root.json").write_bytes(
        evil.trusted_root())
    with pytest.raises(BundleRefused, match="trusted_root.json"):
        media_service.import_bundle(trusted, it, keyless_media)


def test_keyless_component_without_trusted_root_is_refused(trusted, make_user, keyless_media,
                                                           tmp_path_factory):
    it = make_user(["it"], "ivan")
    keys = session_keys(tmp_path_factory.getbasetemp())

    def drop(signed) -> None:
        del signed.targets["sigstore/trusted_root.json"]
    resign(keyless_media, "targets", keys, ("targets",), drop)
    (keyless_media / "targets" / "sigstore" / "trusted_root.json").unlink()
    with pytest.raises(BundleRefused, match="sigstore/trusted_root.json is not signed"):
        media_service.import_bundle(trusted, it, keyless_media)


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_add_component_with_unreadable_sigstore_signature(tmp_path, tmp_path_factory, where):
    """A wrong --sigstore-signature path is one line for the vendor, and leaves no copy of
    the component's files behind in the release."""
    keys = session_keys(tmp_path_factory.getbasetemp())
    pub = new_publisher(tmp_path, keys, "keyless")
    base = tiny_base(tmp_path / "src" / "kl-base")
    sig = tmp_path / "nonexistent.sig" if where == "missing" else tmp_path
    with pytest.raises(InvalidInput, match="cannot read") as err:
        publish.add_component(pub.repo, "base_model", base, None, name="kl-base",
                              sigstore_signature=sig, identity=IDENTITY, issuer=ISSUER)
    assert "\n" not in f"{err.value.message} ({err.value.hint})"
    assert "--sigstore-signature" in err.value.hint
    assert not any((pub.repo / "release").rglob("model.safetensors"))
