"""Kubernetes protobuf request bodies of the review and token APIs, and of Secrets and ConfigMaps, read into their
JSON form.

kubectl 1.32+ sends built-in kinds as ``application/vnd.kubernetes.protobuf`` (``kubectl auth can-i``,
``kubectl create token``), and Helm writes its release records (Secrets, or ConfigMaps) so: the ``k8s\\0``
magic, a ``runtime.Unknown`` envelope, then the object's message.
Only the fields of the messages below are read (field numbers from k8s.io/api's generated.proto); the
answers go back as JSON, which those clients accept too.
"""

from __future__ import annotations

import base64
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# field number -> (JSON name, message schema | "string" | "int" | "bytes", repeated)
Schema = dict[int, tuple[str, Any, bool]]
RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "string", False),
    2: ("verb", "string", False),
    3: ("group", "string", False),
    4: ("version", "string", False),
    5: ("resource", "string", False),
    6: ("subresource", "string", False),
    7: ("name", "string", False),
}
NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "string", False), 2: ("verb", "string", False)}
EXTRA_ENTRY: Schema = {1: ("key", "string", False), 2: ("value", {1: ("items", "string", True)}, False)}
ACCESS_REVIEW_SPEC: Schema = {
    1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
    2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
    3: ("user", "string", False),
    4: ("groups", "string", True),
    5: ("extra", EXTRA_ENTRY, True),
    6: ("uid", "string", False),
}
SPECS: dict[str, Schema] = {
    "SelfSubjectAccessReview": ACCESS_REVIEW_SPEC,
    "SubjectAccessReview": ACCESS_REVIEW_SPEC,
    "LocalSubjectAccessReview": ACCESS_REVIEW_SPEC,
    "SelfSubjectRulesReview": {1: ("namespace", "string", False)},
    "SelfSubjectReview": {},
    "TokenReview": {1: ("token", "string", False), 2: ("audiences", "string", True)},
    "TokenRequest": {1: ("audiences", "string", True), 4: ("expirationSeconds", "int", False)},
}
MAP_ENTRY: Schema = {1: ("key", "string", False), 2: ("value", "string", False)}
BYTES_MAP_ENTRY: Schema = {1: ("key", "string", False), 2: ("value", "bytes", False)}
OBJECT_META: Schema = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    5: ("uid", "string", False),
    6: ("resourceVersion", "string", False),
    11: ("labels", MAP_ENTRY, True),
    12: ("annotations", MAP_ENTRY, True),
    14: ("finalizers", "string", True),
}
# kind -> (its message, which of its fields are maps, which of those carry bytes: base64 in JSON)
OBJECTS: dict[str, tuple[Schema, tuple[str, ...], tuple[str, ...]]] = {
    "Secret": (
        {
            1: ("metadata", OBJECT_META, False),
            2: ("data", BYTES_MAP_ENTRY, True),
            3: ("type", "string", False),
            4: ("stringData", MAP_ENTRY, True),
            5: ("immutable", "int", False),
        },
        ("data", "stringData"),
        ("data",),
    ),
    "ConfigMap": (
        {
            1: ("metadata", OBJECT_META, False),
            2: ("data", MAP_ENTRY, True),
            3: ("binaryData", BYTES_MAP_ENTRY, True),
            4: ("immutable", "int", False),
        },
        ("data", "binaryData"),
        ("binaryData",),
    ),
}
UNKNOWN: Schema = {
    1: ("typeMeta", {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}, False),
    2: ("raw", "bytes", False),
}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, varint value or length-delimited bytes) in order; fixed-width fields are skipped."""
    fields: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            fields.append((number, value))
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ProtobufError("truncated field")
            fields.append((number, data[at : at + length]))
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return fields


def _decode(data: bytes, schema: Schema) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, kind, repeated = schema[number]
        if kind == "int":
            decoded: Any = value if isinstance(value, int) else None
        elif not isinstance(value, bytes):
            continue
        elif kind == "string":
            decoded = value.decode()
        elif kind == "bytes":
            decoded = value
        else:
            decoded = _decode(value, kind)
        if repeated:
            result.setdefault(name, []).append(decoded)
        else:
            result[name] = decoded
    return result


def review_from_protobuf(body: bytes) -> dict[str, Any]:
    """The JSON form of a review or TokenRequest sent as protobuf (ProtobufError if it is not one)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message")
    envelope = _decode(body[len(MAGIC) :], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in SPECS:
        raise ProtobufError(f"unsupported kind {kind!r}")
    message = _decode(envelope.get("raw") or b"", {2: ("spec", SPECS[kind], False)})
    spec = message.get("spec") or {}
    if "extra" in spec:
        spec["extra"] = {entry.get("key", ""): (entry.get("value") or {}).get("items", []) for entry in spec["extra"]}
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, "spec": spec}


def _entries(entries: list[dict[str, Any]], base64_values: bool) -> dict[str, Any]:
    return {
        entry.get("key", ""): base64.b64encode(entry.get("value") or b"").decode()
        if base64_values
        else entry.get("value", "")
        for entry in entries
    }


def object_from_protobuf(body: bytes) -> dict[str, Any]:
    """The JSON form of a Secret or ConfigMap sent as protobuf (ProtobufError if it is not one)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message")
    envelope = _decode(body[len(MAGIC) :], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in OBJECTS:
        raise ProtobufError(f"unsupported kind {kind!r}")
    schema, maps, binary = OBJECTS[kind]
    obj = _decode(envelope.get("raw") or b"", schema)
    metadata = obj.setdefault("metadata", {})
    for field in ("labels", "annotations"):
        if field in metadata:
            metadata[field] = _entries(metadata[field], base64_values=False)
    for field in maps:
        if field in obj:
            obj[field] = _entries(obj[field], base64_values=field in binary)
    if "immutable" in obj:
        obj["immutable"] = bool(obj["immutable"])
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}
