"""A private, offline Sigstore for tests: a Fulcio-like CA issuing a short-lived code-signing
certificate with an embedded SCT from a CT log key, and a Rekor-like log entry (dsse/0.0.1)
with a signed entry timestamp, a one-leaf inclusion proof and a signed checkpoint.

It produces exactly what a keyless `model_signing sign sigstore` run produces (a sigstore
bundle v0.3 with a DSSE envelope) plus the trusted_root.json naming these keys, so the
appliance's keyless path runs against real sigstore verification code, fully offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

OIDC_ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_der(key)).digest()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload),
                                    payload)


def _octet_string(data: bytes) -> bytes:
    n = len(data)
    length = bytes([n]) if n < 128 else bytes([0x82, n >> 8, n & 0xFF])
    return b"\x04" + length + data


class FakeSigstore:
    def __init__(self, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> None:
        self.start = start
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test-fulcio"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "test-fulcio")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(1)
                   .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), critical=True)
                   .add_extension(ski, critical=False)
                   .sign(self.ca_key, hashes.SHA256()))

    def _tlog(self, key: ec.EllipticCurvePrivateKey, url: str) -> dict:
        return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(_der(key.public_key())),
                              "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ")}},
                "logId": {"keyId": _b64(_key_id(key.public_key()))}}

    def trusted_root(self) -> bytes:
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._tlog(self.rekor_key, "https://rekor.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": "test-fulcio", "commonName": "test-fulcio"},
                "uri": "https://fulcio.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(self.ca.public_bytes(
                    serialization.Encoding.DER))}]},
                "validFor": {"start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ")}}],
            "ctlogs": [self._tlog(self.ct_key, "https://ctfe.invalid")],
            "timestampAuthorities": []}).encode()

    def _leaf(self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str,
              at: datetime) -> x509.Certificate:
        def build(sct_ext: bytes) -> x509.Certificate:
            return (x509.CertificateBuilder().subject_name(x509.Name([]))
                    .issuer_name(self.ca.subject).public_key(key.public_key())
                    .serial_number(4242).not_valid_before(at - timedelta(minutes=1))
                    .not_valid_after(at + timedelta(minutes=9))
                    .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                                 False, False), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                                   critical=False)
                    .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]),
                                   critical=True)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        self.ca_key.public_key()), critical=False)
                    .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_OID,
                                                              issuer.encode()), critical=False)
                    .add_extension(x509.UnrecognizedExtension(SCT_OID, sct_ext),
                                   critical=False)
                    .sign(self.ca_key, hashes.SHA256()))

        def sct_list(sig: bytes, ts_ms: int) -> bytes:
            sct = (b"\x00" + _key_id(self.ct_key.public_key()) + struct.pack("!Q", ts_ms)
                   + b"\x00\x00" + b"\x04\x03" + struct.pack("!H", len(sig)) + sig)
            body = struct.pack("!H", len(sct)) + sct
            return _octet_string(struct.pack("!H", len(body)) + body)

        ts_ms = int(at.timestamp() * 1000)
        placeholder = build(sct_list(b"\x00" * 72, ts_ms))
        tbs = placeholder.tbs_precertificate_bytes
        signed = (struct.pack("!BBQH", 0, 0, ts_ms, 1) + _key_id(self.ca_key.public_key())
                  + struct.pack("!I", len(tbs))[1:] + tbs + b"\x00\x00")
        return build(sct_list(_sign(self.ct_key, signed), ts_ms))

    def sign_statement(self, statement: bytes, identity: str, issuer: str,
                       at: datetime) -> bytes:
        """A keyless sigstore bundle over `statement`, as signed at time `at`."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(key, identity, issuer, at)
        sig = _sign(key, pae(statement))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": "0" * 64},
            "payloadHash": {"algorithm": "sha256",
                            "value": hashlib.sha256(statement).hexdigest()},
            "signatures": [{"signature": _b64(sig), "verifier": _b64(pem)}]}})
        log_id = _key_id(self.rekor_key.public_key())
        integrated = int(at.timestamp())
        set_payload = rfc8785.dumps({"body": _b64(body), "integratedTime": integrated,
                                     "logID": log_id.hex(), "logIndex": 0})
        root_hash = hashlib.sha256(b"\x00" + body).digest()
        note = f"rekor.invalid - 1\n1\n{_b64(root_hash)}\n"
        note_sig = log_id[:4] + _sign(self.rekor_key, note.encode())
        checkpoint = f"{note}\n\u2014 rekor.invalid {_b64(note_sig)}\n"
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [{
                    "logIndex": "0", "logId": {"keyId": _b64(log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": str(integrated),
                    "inclusionPromise": {"signedEntryTimestamp": _b64(
                        _sign(self.rekor_key, set_payload))},
                    "inclusionProof": {"logIndex": "0", "rootHash": _b64(root_hash),
                                       "treeSize": "1", "hashes": [],
                                       "checkpoint": {"envelope": checkpoint}},
                    "canonicalizedBody": _b64(body)}]},
            "dsseEnvelope": {"payload": _b64(statement), "payloadType": PAYLOAD_TYPE,
                             "signatures": [{"sig": _b64(sig), "keyid": ""}]}}).encode()


def statement_for(directory) -> bytes:
    """The in-toto statement model-signing makes for a directory (what gets signed)."""
    from google.protobuf import json_format
    from model_signing import hashing
    from model_signing._signing import signing

    manifest = (hashing.Config()
                .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
                .set_ignored_paths(paths=[], ignore_git_paths=False).hash(directory))
    return json_format.MessageToJson(signing.Payload(manifest).statement.pb).encode()
