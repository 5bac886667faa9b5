"""Per-component file manifests: OpenSSF model signing (a sigstore bundle holding a DSSE
in-toto statement with the SHA-256 of every file).

Verification checks the DSSE signature over the statement with a key the TUF metadata
names (read and checked here with the standard library and `cryptography`; tests hold it to
model-signing's own verifier) and then takes the per-file digests from the statement. It
never lets model-signing re-hash the payload: the content store hashes each byte once,
while copying it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
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


BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_HASHES = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}


@dataclass(frozen=True)
class KeyBundle:
    """A key-method model signature: a sigstore bundle whose DSSE envelope signs the
    statement, and the hint naming the key (SHA-256 of its PEM)."""

    hint: str | None
    payload_type: str
    payload: bytes
    signature: bytes


def parse_key_bundle(data: bytes) -> KeyBundle:
    """Read a key-method bundle strictly with the standard library. model-signing's own
    reader builds pydantic models whose import alone took a quarter of a second of every
    import; tests hold this reader and `verify_key_signature` to model-signing's verifier."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise ValueError(f"not a sigstore bundle of media type {BUNDLE_MEDIA_TYPE}")
    material = doc["verificationMaterial"]
    key = material.get("publicKey")
    hint = key.get("hint") if isinstance(key, dict) else None
    envelope = doc["dsseEnvelope"]
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures or not isinstance(
            signatures[0], dict) or not isinstance(envelope["payloadType"], str) or (
            hint is not None and not isinstance(hint, str)):
        raise ValueError("malformed DSSE envelope")
    return KeyBundle(hint, envelope["payloadType"],
                     base64.b64decode(envelope["payload"], validate=True),
                     base64.b64decode(signatures[0]["sig"], validate=True))


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, as model-signing signs it (its payload type is
    always the in-toto one; the envelope's own field is checked with the statement)."""
    return b"DSSEv1 %d %s %d " % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload)) \
        + payload


_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, InvalidSignature,
                 UnicodeDecodeError)


def verify_key_signature(data: bytes, public: ec.EllipticCurvePublicKey, what: str
                         ) -> SignedManifest:
    """Verify a key-method model signature with `public`; return the signed manifest."""
    try:
        bundle = parse_key_bundle(data)
    except (*_PARSE_ERRORS, binascii.Error) as exc:
        raise refuse(f"{what}: malformed model signature ({_short(exc)})") from None
    if bundle.hint != bkeys.model_signing_hint(public):
        raise refuse(f"{what}: model signature was made with a key the metadata does not "
                     f"name for it")
    digest = _HASHES.get(public.curve.key_size)
    if digest is None:
        raise refuse(f"{what}: unsupported key curve {public.curve.name}")
    try:
        public.verify(bundle.signature, pae(bundle.payload), ec.ECDSA(digest()))
    except InvalidSignature:
        raise refuse(f"{what}: model signature does not verify") from None
    return parse_statement(bundle.payload_type, bundle.payload, what)


def verify_sigstore_signature(data: bytes, trusted_root: bytes, identity: str, issuer: str,
                              what: str) -> SignedManifest:
    """Verify a keyless (Fulcio certificate + Rekor entry) model signature offline against
    `trusted_root` (a TUF-verified target), never sigstore's built-in or cached root."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    root = load_trusted_root(trusted_root, what)
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, *_PARSE_ERRORS) as exc:
        raise refuse(f"{what}: malformed keyless signature ({_short(exc)})") from None
    try:
        ptype, payload = Verifier(trusted_root=root).verify_dsse(
            bundle, policy.Identity(identity=identity, issuer=issuer))
    except (SigstoreError, *_PARSE_ERRORS) as exc:
        raise refuse(f"{what}: keyless signature does not verify ({_short(exc)})") from None
    return parse_statement(ptype, payload, what)


def load_trusted_root(data: bytes, what: str):
    """sigstore's TrustedRoot from `trusted_root.json` bytes (publishers check theirs too)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
    except (SigstoreError, *_PARSE_ERRORS) as exc:
        raise refuse(f"{what}: malformed sigstore trusted root ({_short(exc)})") from None


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

