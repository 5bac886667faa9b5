"""bundles/schema/ describes every metadata file a published bundle holds: each file of
real published media validates, and documents the importer refuses also fail the schema."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.bundle.bundlekit import full_release, new_publisher, session_keys, tiny_adapter

SCHEMAS = Path(__file__).parents[2] / "bundles" / "schema"


def registry() -> Registry:
    resources = []
    for p in sorted(SCHEMAS.glob("*.schema.json")):
        doc = json.loads(p.read_text())
        Draft202012Validator.check_schema(doc)
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"urn:clinical-appliance:bundle:{name}"},
                                registry=registry())


def schema_for(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    if rel.startswith("metadata/"):
        if name.endswith("root.json"):
            return "root"
        return {"timestamp.json": "timestamp", "snapshot.json": "snapshot"}.get(name, "targets")
    if name == "bundle.json":
        return "bundle-description"
    if name.endswith(".sig"):
        return "model-signature"
    return ""


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> list[Path]:
    keys = session_keys(tmp_path_factory.getbasetemp())
    tmp_path = tmp_path_factory.mktemp("schemas")
    pub = new_publisher(tmp_path, keys)
    v1 = full_release(pub, tmp_path / "usb1")
    tiny_adapter(pub.src / "site")
    pub.add("lora_adapter", "site", key="lora", role="appliance-lora", base_model="tiny-base",
            base_digest="ab" * 32)
    return [v1, pub.release(tmp_path / "usb2", signers=("lora", "online"))]


def test_every_metadata_file_of_published_media_validates(media):
    checked = set()
    for m in media:
        for p in sorted(m.rglob("*")):
            rel = p.relative_to(m).as_posix()
            schema = schema_for(rel)
            if not p.is_file() or not schema:
                continue
            doc = json.loads(p.read_bytes())
            errors = list(validator(schema).iter_errors(doc))
            assert not errors, f"{rel}: {errors[0].message}"
            checked.add(schema)
            if schema == "model-signature":
                statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
                validator("statement").validate(statement)
                checked.add("statement")
    assert checked == {"root", "timestamp", "snapshot", "targets", "bundle-description",
                       "model-signature", "statement"}
    names = {p.name.split(".")[0] for p in SCHEMAS.glob("*.schema.json")}
    assert names == checked | {"common", "component-custom"}


def _custom(media: list[Path]) -> dict:
    targets = json.loads((media[0] / "metadata" / "targets.json").read_bytes())["signed"]
    return targets["targets"]["components/tiny-adapter.sig"]["custom"]


@pytest.mark.parametrize("change", [
    lambda c: c.update(kind="firmware"),
    lambda c: c.update(schema_version=2),
    lambda c: c.pop("base_model"),
    lambda c: c.update(engine={"gpu_archs": ["sm_90"], "trtllm_version": "x", "tp": 1,
                               "pp": 1, "min_gpu_memory_mib": 1}),
    lambda c: c["signer"].update(method="certificate"),
    lambda c: c.update(payload="../etc"),
    lambda c: c.update(surprise=True),
])
def test_custom_fields_the_importer_refuses_fail_the_schema(media, change):
    from appliance.bundle.model import ComponentInfo
    from appliance.errors import BundleRefused

    custom = _custom(media)
    ComponentInfo.from_custom(custom, "components/tiny-adapter.sig")
    validator("component-custom").validate(custom)
    change(custom)
    assert list(validator("component-custom").iter_errors(custom))
    with pytest.raises(BundleRefused):
        ComponentInfo.from_custom(custom, "components/tiny-adapter.sig")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs", "a//b", "a/./b", "a\\b", "a/"])
def test_unsafe_file_names_fail_the_statement_schema(name):
    from appliance.bundle.model import safe_relpath
    from appliance.errors import BundleRefused

    resources = [{"name": name, "algorithm": "sha256", "digest": "0" * 64}]
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "predicateType": "https://model_signing/signature/v1.0",
                 "subject": [{"name": "x", "digest": {"sha256": "0" * 64}}],
                 "predicate": {"serialization": {"method": "files", "hash_type": "sha256"},
                               "resources": resources}}
    assert list(validator("statement").iter_errors(statement))
    with pytest.raises(BundleRefused):
        safe_relpath(name, "x")
