"""`appliance bundle ...`: the publisher's tools. They need keys and a working directory,
not an appliance: vendors run them on their own build machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import JsonOpt, emit

app = typer.Typer(help="Publish signed bundles (vendors, and the appliance for LoRA).",
                  no_args_is_help=True)

DirArg = Annotated[Path, typer.Argument(help="The publisher's working repository.")]
KeyOpt = Annotated[Path, typer.Option("--key", help="PEM private key (ECDSA P-256/P-384).")]
PubKeys = Annotated[list[Path] | None, typer.Option(help="PEM public key; repeat for more.")]


def _read(paths: list[Path] | None) -> list[bytes]:
    from appliance.errors import InvalidInput

    out = []
    for p in paths or []:
        try:
            out.append(Path(p).read_bytes())
        except OSError as exc:
            raise InvalidInput(f"cannot read {p}: {exc.strerror}", "pass a PEM file") from None
    return out


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Argument(help="Private key file to create (0600).")],
    curve: Annotated[str, typer.Option("--curve", help="p256 or p384.")] = "p256",
    as_json: JsonOpt = False,
) -> None:
    """Create a signing key pair (KEY.pem and KEY.pub.pem)."""
    from appliance.bundle.keys import generate

    pub, keyid = generate(out, curve)
    emit({"private": str(out), "public": str(pub), "keyid": keyid}, as_json,
         f"Private key {out} (keep offline)\nPublic key {pub}\nKey id {keyid}")


@app.command("init-repo")
def init_repo(
    directory: DirArg,
    name: Annotated[str, typer.Option("--name", help="Bundle name (lowercase).")],
    publisher: Annotated[str, typer.Option("--publisher", help="Publisher shown to users.")],
    root_key: Annotated[list[Path], typer.Option("--root-key", help="Root public key(s).")],
    root_threshold: Annotated[int, typer.Option("--root-threshold")] = 1,
    targets_key: PubKeys = None,
    targets_threshold: Annotated[int, typer.Option("--targets-threshold")] = 1,
    online_key: Annotated[list[Path] | None, typer.Option(
        "--online-key", help="Snapshot and timestamp key(s); default the targets keys.")] = None,
    lora_key: Annotated[list[Path] | None, typer.Option(
        "--lora-key", help="Appliance key(s) allowed to publish LoRA adapters only.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a publisher repository: roles, keys and thresholds."""
    from appliance.bundle import publish

    repo = publish.init_repo(directory, name, publisher, _read(root_key), root_threshold,
                             _read(targets_key) or None, targets_threshold,
                             _read(online_key) or None, _read(lora_key) or None)
    cfg = repo.config()
    emit(cfg.to_dict(), as_json, f"Repository {directory} for bundle {cfg.name} created")


@app.command("add-component")
def add_component(
    directory: DirArg,
    kind: Annotated[str, typer.Option("--kind", help="base_model, lora_adapter, "
                                      "trtllm_engine, golden_set or evaluation_evidence.")],
    path: Annotated[Path, typer.Option("--path", help="Directory holding the files.")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="Private key that signs the file manifest.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Default: directory name.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Profile tag.")] = None,
    role: Annotated[str, typer.Option("--role", help="targets or appliance-lora.")] = "targets",
    base_model: Annotated[str | None, typer.Option("--base-model")] = None,
    base_digest: Annotated[str | None, typer.Option(
        "--base-digest", help="Digest of an installed base model not in this bundle.")] = None,
    gpu_arch: Annotated[list[str] | None, typer.Option("--gpu-arch", help="e.g. sm_90.")] = None,
    trtllm_version: Annotated[str | None, typer.Option("--trtllm-version")] = None,
    tp: Annotated[int, typer.Option("--tp", help="Tensor parallel size.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline parallel size.")] = 1,
    min_gpu_memory_mib: Annotated[int | None, typer.Option("--min-gpu-memory-mib")] = None,
    sigstore_signature: Annotated[Path | None, typer.Option(
        "--sigstore-signature", help="A keyless model signature made elsewhere.")] = None,
    identity: Annotated[str, typer.Option("--identity", help="Keyless signer identity.")] = "",
    issuer: Annotated[str, typer.Option("--issuer", help="Keyless OIDC issuer.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Copy a component into the release and sign its files (model signing)."""
    from appliance.bundle import publish
    from appliance.bundle.model import EngineSpec
    from appliance.errors import InvalidInput

    engine = None
    if kind == "trtllm_engine":
        if not gpu_arch or not trtllm_version or not min_gpu_memory_mib:
            raise InvalidInput("an engine needs --gpu-arch, --trtllm-version and "
                               "--min-gpu-memory-mib")
        engine = EngineSpec(tuple(gpu_arch), trtllm_version, tp, pp, min_gpu_memory_mib)
    spec = publish.add_component(directory, kind, path, key, name=name, tags=tag, role=role,
                                 base_model=base_model, base_digest=base_digest, engine=engine,
                                 sigstore_signature=sigstore_signature, identity=identity,
                                 issuer=issuer)
    emit(spec.to_dict(), as_json,
         f"Added {spec.kind} {spec.name}: {spec.custom['files']} files, "
         f"{spec.custom['size']} bytes, digest {spec.custom['digest']}")


@app.command("set-release")
def set_release(
    directory: DirArg,
    version: Annotated[int | None, typer.Option("--version")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the release's bundle version (only goes up) and description."""
    from appliance.bundle import publish
    from appliance.bundle.repo import Repo

    publish.set_release(directory, version, description)
    spec = Repo(directory).release()
    emit(spec.to_dict(), as_json, f"Release version {spec.version}")


@app.command("set-keys")
def set_keys(
    directory: DirArg,
    role: Annotated[str, typer.Option("--role", help="root, targets, snapshot, timestamp "
                                      "or appliance-lora.")],
    key: Annotated[list[Path], typer.Option("--key", help="Public key(s) of the role.")],
    threshold: Annotated[int, typer.Option("--threshold")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Rotate or revoke a role's keys; the next release carries the change, signed by the
    current root keys' threshold (and the new ones for root)."""
    from appliance.bundle import publish

    publish.set_role_keys(directory, role, _read(key), threshold)
    emit({"role": role, "keys": len(key), "threshold": threshold}, as_json,
         f"Role {role}: {len(key)} keys, threshold {threshold} (in the next release)")


@app.command("trusted-root")
def trusted_root(
    directory: DirArg,
    file: Annotated[Path, typer.Argument(help="sigstore trusted_root.json for keyless.")],
    as_json: JsonOpt = False,
) -> None:
    """Ship a sigstore trusted root as a signed target (for keyless components)."""
    from appliance.bundle import publish

    publish.set_trusted_root(directory, file)
    emit({"trusted_root": str(file)}, as_json, "Trusted root added to the release")


def _status_text(rows) -> str:
    return "\n".join(f"  {r.role:<16} v{r.version:<4} {r.signed}/{r.threshold} signatures"
                     f"{'' if r.complete else '  (needs more)'}" for r in rows)


@app.command("sign")
def sign(directory: DirArg, key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Sign every metadata file this key may sign (one call per signer: k-of-n)."""
    from appliance.bundle import publish

    roles = publish.sign(directory, key)
    rows = publish.status(directory)
    emit({"signed": roles, "status": [r.__dict__ | {"complete": r.complete} for r in rows]},
         as_json, f"Signed: {', '.join(roles)}\n" + _status_text(rows))


@app.command("status")
def status(directory: DirArg, as_json: JsonOpt = False) -> None:
    """Signatures collected per role against each threshold."""
    from appliance.bundle import publish

    rows = publish.status(directory)
    emit([r.__dict__ | {"complete": r.complete} for r in rows], as_json, _status_text(rows))


@app.command("publish")
def publish_cmd(
    directory: DirArg,
    to: Annotated[Path, typer.Option("--to", help="New directory, or FILE.tar.")],
    as_json: JsonOpt = False,
) -> None:
    """Write the fully signed release to media (a directory or one uncompressed tar)."""
    from appliance.bundle import publish
    from appliance.bundle.repo import Repo
    from appliance.bundle.trust import fingerprint

    out = publish.publish(directory, to)
    # What a new appliance's security officer needs for `appliance trust init`: the newest
    # root and, on paper, its fingerprint. Appliances that trust one already get it on media.
    version = Repo(directory).published_roots()[-1].signed.version
    root = Repo(directory).published / f"{version}.root.json"
    fp = fingerprint(root.read_bytes())
    emit({"published": str(out), "root_version": version, "root": str(root),
          "root_fingerprint": fp}, as_json,
         f"Published to {out}\nRoot v{version} for `appliance trust init --root` on new "
         f"appliances: {root}\n  fingerprint (hand it over on paper): {fp}")
