"""The appliance reads key-method model signatures itself (model-signing's reader costs a
quarter of a second of imports); here it must agree with model-signing's own verifier on
valid signatures and on every way of breaking one."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.bundle import keys as bkeys
from appliance.bundle.components import (
    parse_statement,
    sign_component,
    verify_key_signature,
)
from appliance.errors import BundleRefused


def _reference(data: bytes, public: ec.EllipticCurvePublicKey) -> str:
    """What the appliance did before: model-signing parses and verifies the bundle."""
    from model_signing._signing import sign_ec_key, sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    parsed = json.loads(data)
    vm = parsed["verificationMaterial"]
    vm.setdefault("tlogEntries", [])
    if isinstance(vm.get("publicKey"), dict):
        vm["publicKey"].setdefault("hint", None)
    signature = sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))
    material = signature.bundle.verification_material.public_key
    if (material.hint if material else None) != bkeys.model_signing_hint(public):
        raise ValueError("hint")

    class Verifier(sign_ec_key.Verifier):
        def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
            self._public_key = key

    Verifier(public).verify(signature)
    envelope = signature.bundle.dsse_envelope
    return parse_statement(envelope.payload_type, envelope.payload, "reference").digest


def _ours(data: bytes, public: ec.EllipticCurvePublicKey) -> str:
    return verify_key_signature(data, public, "ours").digest


def _edit(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()
    return apply


def _payload(change: Callable[[dict], None]) -> Callable[[dict], None]:
    def apply(doc: dict) -> None:
        env = doc["dsseEnvelope"]
        statement = json.loads(base64.b64decode(env["payload"]))
        change(statement)
        env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return apply


def _flip_sig(doc: dict) -> None:
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()


BREAKS: dict[str, Callable[[bytes], bytes]] = {
    "valid": lambda d: d,
    "payload_file_digest_changed": _edit(_payload(
        lambda st: st["predicate"]["resources"][0].update(digest="0" * 64))),
    "signature_bit_flipped": _edit(_flip_sig),
    "media_type_changed": _edit(lambda d: d.update(
        mediaType="application/vnd.dev.sigstore.bundle.v0.2+json")),
    "hint_removed": _edit(lambda d: d["verificationMaterial"].pop("publicKey")),
    "hint_of_other_key": _edit(lambda d: d["verificationMaterial"]["publicKey"].update(
        hint="ab" * 32)),
    "no_signatures": _edit(lambda d: d["dsseEnvelope"].update(signatures=[])),
    "payload_type_changed": _edit(lambda d: d["dsseEnvelope"].update(
        payloadType="text/plain")),
    "payload_not_base64": _edit(lambda d: d["dsseEnvelope"].update(payload="%%%")),
    "envelope_missing": _edit(lambda d: d.pop("dsseEnvelope")),
    "not_json": lambda d: d[:-7],
}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    root = tmp_path_factory.mktemp("sig")
    payload = root / "payload"
    payload.mkdir()
    (payload / "config.json").write_text('{"model_type": "llama"}')
    (payload / "weights.bin").write_bytes(bytes(range(256)) * 64)
    bkeys.generate(root / "vendor.pem")
    bkeys.generate(root / "other.pem")
    return sign_component(payload, root / "vendor.pem"), root


@pytest.mark.parametrize("name", list(BREAKS))
def test_our_reader_agrees_with_model_signing(signed: tuple[bytes, Path], name: str) -> None:
    data, root = signed
    public = bkeys.load_private(root / "vendor.pem").public_key()
    broken = BREAKS[name](data)
    try:
        expected: str | None = _reference(broken, public)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, InvalidSignature,
            BundleRefused):
        expected = None
    if expected is None:
        with pytest.raises(BundleRefused) as refused:
            _ours(broken, public)
        assert "\n" not in refused.value.message
    else:
        assert _ours(broken, public) == expected
    assert (name == "valid") == (expected is not None)


def test_a_signature_by_another_key_is_refused_by_both(signed: tuple[bytes, Path]) -> None:
    data, root = signed
    other = bkeys.load_private(root / "other.pem").public_key()
    with pytest.raises((ValueError, InvalidSignature)):
        _reference(data, other)
    with pytest.raises(BundleRefused, match="key the metadata does not name"):
        _ours(data, other)
