"""Per-component file manifests: OpenSSF model signing (a sigstore bundle holding a DSSE
in-toto statement with the SHA-256 of every file).

Verification checks the DSSE signature over the statement with a key the TUF metadata
names and then takes the per-file digests from the statement. It never lets model-signing
re-hash the payload: the content store hashes each byte once, while copying it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.bundle import keys as bkeys
from appliance.bundle.model import MAX_FILES, SHA256_RE, refuse, safe_relpath

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class SignedFile:
    relpath: str
    sha256: str


@dataclass(frozen=True)
class SignedManifest:
    """What a verified component signature says: the model name, its digest, every file."""

    model_name: str
    digest: str
    files: tuple[SignedFile, ...]


def sign_component(payload_dir: Path, private_key: Path, password: str | None = None) -> bytes:
    """Hash every file of `payload_dir` and sign the manifest with an ECDSA key (model-signing
    key method). Returns the signature file's bytes."""
    from model_signing import hashing, signing

    bkeys.load_private(private_key, password.encode() if password else None)
    hcfg = (hashing.Config()
            .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
            .set_ignored_paths(paths=[], ignore_git_paths=False))
    cfg = signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)
    cfg.set_hashing_config(hcfg)
    with tempfile.TemporaryDirectory(prefix="appliance-sign-") as tmp:
        out = Path(tmp) / "model.sig"
        cfg.sign(Path(payload_dir), out)
        return out.read_bytes()


def _parse_pb_bundle(data: bytes) -> Any:
    """The sigstore bundle as model-signing's key verifier reads it (sign_sigstore_pb)."""
    from model_signing._signing import sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    parsed = json.loads(data)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("verificationMaterial"), dict):
        raise ValueError("not a sigstore bundle")
    vm = parsed["verificationMaterial"]
    vm.setdefault("tlogEntries", [])
    if isinstance(vm.get("publicKey"), dict):
        vm["publicKey"].setdefault("hint", None)
        for k in ("rawBytes", "keyDetails"):
            vm["publicKey"].pop(k, None)
    return sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))


def _key_verifier(public: ec.EllipticCurvePublicKey) -> Any:
    # model-signing's Verifier only takes a key *file*; the key here comes from verified TUF
    # metadata in memory, so set it directly rather than writing it out.
    from model_signing._signing import sign_ec_key

    class _Verifier(sign_ec_key.Verifier):
        def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
            sign_ec_key._check_supported_ec_key(key)
            self._public_key = key

    return _Verifier(public)


_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, InvalidSignature,
                 UnicodeDecodeError)


def verify_key_signature(data: bytes, public: ec.EllipticCurvePublicKey, what: str
                         ) -> SignedManifest:
    """Verify a key-method model signature with `public`; return the signed manifest."""
    try:
        signature = _parse_pb_bundle(data)
    except _PARSE_ERRORS as exc:
        raise refuse(f"{what}: malformed model signature ({_short(exc)})") from None
    hint = signature.bundle.verification_material.public_key.hint \
        if signature.bundle.verification_material.public_key else None
    if hint != bkeys.model_signing_hint(public):
        raise refuse(f"{what}: model signature was made with a key the metadata does not "
                     f"name for it")
    try:
        _key_verifier(public).verify(signature)
    except InvalidSignature:
        raise refuse(f"{what}: model signature does not verify") from None
    except _PARSE_ERRORS as exc:
        raise refuse(f"{what}: model signature refused ({_short(exc)})") from None
    envelope = signature.bundle.dsse_envelope
    return parse_statement(envelope.payload_type, envelope.payload, what)


def verify_sigstore_signature(data: bytes, trusted_root: bytes, identity: str, issuer: str,
                              what: str) -> SignedManifest:
    """Verify a keyless (Fulcio certificate + Rekor entry) model signature offline against
    `trusted_root` (a TUF-verified target), never sigstore's built-in or cached root."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(trusted_root))
        bundle = Bundle.from_json(data)
    except (SigstoreError, *_PARSE_ERRORS) as exc:
        raise refuse(f"{what}: malformed keyless signature or trusted root "
                     f"({_short(exc)})") from None
    try:
        ptype, payload = Verifier(trusted_root=root).verify_dsse(
            bundle, policy.Identity(identity=identity, issuer=issuer))
    except (SigstoreError, *_PARSE_ERRORS) as exc:
        raise refuse(f"{what}: keyless signature does not verify ({_short(exc)})") from None
    return parse_statement(ptype, payload, what)


def parse_statement(payload_type: str, payload: bytes, what: str) -> SignedManifest:
    """The in-toto statement, checked strictly: duplicate, unsafe or case-colliding names
    are refused here (model-signing's Manifest would silently keep one of two duplicates)."""
    if payload_type != PAYLOAD_TYPE:
        raise refuse(f"{what}: unexpected DSSE payload type {payload_type!r}")
    try:
        st = json.loads(payload)
        if st.get("_type") != STATEMENT_TYPE or st.get("predicateType") != PREDICATE_TYPE:
            raise refuse(f"{what}: not a model-signing v1.0 statement")
        subjects = st["subject"]
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise refuse(f"{what}: statement must have exactly one subject")
        name = subjects[0]["name"]
        digest = subjects[0]["digest"]["sha256"]
        pred = st["predicate"]
        ser = pred["serialization"]
        resources = pred["resources"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise refuse(f"{what}: malformed statement ({_short(exc)})") from None
    if not isinstance(ser, dict) or ser.get("method") != "files" or \
            ser.get("hash_type") != "sha256":
        raise refuse(f"{what}: statement must use per-file SHA-256 serialization")
    if not isinstance(resources, list) or not resources or len(resources) > MAX_FILES:
        raise refuse(f"{what}: statement must list 1 to {MAX_FILES} files")
    files: list[SignedFile] = []
    seen: set[str] = set()
    for r in resources:
        if not isinstance(r, dict) or r.get("algorithm") != "sha256" or not isinstance(
                r.get("digest"), str) or not SHA256_RE.match(r["digest"]) or not isinstance(
                r.get("name"), str):
            raise refuse(f"{what}: statement has a malformed file entry")
        rel = safe_relpath(r["name"], what)
        key = rel.casefold()
        if key in seen:
            raise refuse(f"{what}: duplicate or case-colliding file {rel!r}")
        seen.add(key)
        files.append(SignedFile(rel, r["digest"]))
    # The subject digest is SHA-256 over the file digests in order (model-signing v1.0).
    root = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in files)).hexdigest()
    if digest != root:
        raise refuse(f"{what}: statement subject digest does not match its files")
    return SignedManifest(str(name), digest, tuple(files))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]

