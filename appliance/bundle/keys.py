"""Publisher keys: ECDSA P-256 or P-384 only, as PEM files, seen by TUF and model signing.

model-signing's key method refuses Ed25519, and one key type for both layers keeps a
vendor's key ceremony simple, so the publisher tools accept nothing else.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, SSlibKey

from appliance.errors import InvalidInput

CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}
SCHEMES = {"secp256r1": "ecdsa-sha2-nistp256", "secp384r1": "ecdsa-sha2-nistp384"}


def _check_curve(key: ec.EllipticCurvePublicKey, source: str) -> None:
    if key.curve.name not in SCHEMES:
        raise InvalidInput(f"{source}: unsupported curve {key.curve.name}",
                           "use an ECDSA P-256 or P-384 key")


def load_private(path: Path, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read private key {path}: {exc}",
                           "pass a PEM (PKCS#8) ECDSA P-256 or P-384 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path} is not an ECDSA key (model signing refuses others)",
                           "use an ECDSA P-256 or P-384 key")
    _check_curve(key.public_key(), str(path))
    return key


def load_public(data: bytes, source: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InvalidInput(f"cannot read public key {source}: {exc}",
                           "pass a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidInput(f"{source} is not an ECDSA public key",
                           "use an ECDSA P-256 or P-384 key")
    _check_curve(key, source)
    return key


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def tuf_key(public: ec.EllipticCurvePublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(public, scheme=SCHEMES[public.curve.name])


def tuf_signer(private: ec.EllipticCurvePrivateKey) -> CryptoSigner:
    return CryptoSigner(private, tuf_key(private.public_key()))


def keyid_of(public: ec.EllipticCurvePublicKey) -> str:
    return tuf_key(public).keyid


def crypto_public(key: SSlibKey) -> ec.EllipticCurvePublicKey:
    """The cryptography object behind a TUF key from verified metadata."""
    if key.keytype != "ecdsa" or key.scheme not in SCHEMES.values():
        raise ValueError(f"key {key.keyid[:16]} is {key.keytype}/{key.scheme}, not ECDSA")
    return load_public(key.keyval["public"].encode(), f"key {key.keyid[:16]}")


def model_signing_hint(public: ec.EllipticCurvePublicKey) -> str:
    """What model-signing writes as the key hint: SHA-256 of the PEM public key."""
    return hashlib.sha256(public_pem(public)).hexdigest()


def generate(private_path: Path, curve: str = "p256") -> tuple[Path, str]:
    """Write a new private key (0600, never overwriting) and its .pub.pem; return keyid."""
    if curve not in CURVES:
        raise InvalidInput(f"unknown curve {curve!r}", "use p256 or p384")
    key = ec.generate_private_key(CURVES[curve]())
    private_path = Path(private_path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        if not private_path.parent.is_dir():
            private_path.parent.mkdir(parents=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and exc.filename == str(private_path):
            raise InvalidInput(f"{private_path} exists", "choose a new file name") from None
        why = f"{exc.filename} is not a directory" if isinstance(exc, FileExistsError) \
            else exc.strerror  # mkdir met a file where a directory should be
        raise InvalidInput(f"cannot create {private_path}: {why}",
                           "choose a file in a writable directory") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = public_path_for(private_path)
    pub.write_bytes(public_pem(key.public_key()))
    return pub, keyid_of(key.public_key())


def public_path_for(private_path: Path) -> Path:
    name = private_path.name
    stem = name[: -len(".pem")] if name.endswith(".pem") else name
    return private_path.with_name(stem + ".pub.pem")
