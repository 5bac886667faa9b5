"""The appliance's own ECDSA P-256 signing key: checkpoints, export manifests, local bundles."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.errors import ApplianceError


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: the key id printed everywhere."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_pem(data: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ApplianceError("public key is not an ECDSA key", "use the appliance's P-256 key")
    return key


def verify_signature(key: ec.EllipticCurvePublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):  # TypeError: not text (a tampered file)
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """The private key, with its public half and id worked out once: every checkpoint
    names the key id, and deriving it (point, DER, SHA-256) costs a checkpoint ~0.1 ms."""

    private: ec.EllipticCurvePrivateKey

    @cached_property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()

    @cached_property
    def key_id(self) -> str:
        return fingerprint(self.public)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private.sign(data, ec.ECDSA(hashes.SHA256()))).decode()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def save(self, private_path: Path, public_path: Path) -> None:
        """Write the private key 0600 (created with that mode, never widened) and the public key."""
        private_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(private_path.parent, 0o700)
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        public_path.write_bytes(public_pem(self.public))

    @classmethod
    def load(cls, private_path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ApplianceError("appliance key is not an ECDSA key", "re-create the appliance")
        return cls(key)
