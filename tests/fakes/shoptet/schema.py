"""The extracted OpenAPI schemas (`schemas.json`), a tiny validator, and `conform()` for the data generator."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

SCHEMAS_FILE = Path(__file__).with_name("schemas.json")

# How `nulled()` treats a nullable object: null as a whole ("objects"), or kept with null fields ("fields").
Nulls = Literal["objects", "fields"]

_MISSING = object()

# Values for required, non-nullable fields that the generator did not set, keyed by the field's pattern.
_PATTERN_DEFAULTS = {
    r"^(-)?[0-9]+\.[0-9]{2}$": "0.00",
    r"^[0-9]+\.[0-9]{2}$": "0.00",
    r"^(-)?[0-9]+\.[0-9]{3}$": "0.000",
    r"^[0-9]+\.[0-9]{3}$": "0.000",
    r"^[0-9]+\.[0-9]{8}$": "1.00000000",
    r"[0-9]+\.[0-9]{4}$": "1.0000",
}


@functools.cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))
    return spec


def schema(name: str) -> dict[str, Any]:
    """One resolved schema: order, orderItem, invoice, invoiceItem, orderListItem, eshop, job, webhook, ..."""
    node: dict[str, Any] = _spec()["schemas"][name]
    return node


def webhook_events() -> frozenset[str]:
    """Events an addon may register through `POST /api/webhooks` (regular and mass events)."""
    return frozenset(_spec()["webhookEvents"]) | frozenset(_spec()["massWebhookEvents"])


def system_webhook_events() -> frozenset[str]:
    return frozenset(_spec()["systemWebhookEvents"])


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    if declared is None:
        types = {"null" if value is None else _json_type(value) for value in node.get("enum", [])}
        return types or {"any"}
    return {declared} if isinstance(declared, str) else set(declared)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def validate(node: dict[str, Any], value: Any, path: str = "$") -> list[str]:
    """Return the schema violations of `value` (type, null, required, unknown keys, enum, pattern, oneOf)."""
    if "oneOf" in node:
        if any(not validate(option, value, path) for option in node["oneOf"]):
            return []
        return [f"{path}: matches no oneOf option ({value!r:.80})"]
    types = _types(node)
    kind = _json_type(value)
    if "any" not in types and kind not in types and not (kind == "integer" and "number" in types):
        return [f"{path}: {kind} is not {sorted(types)}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{path}: {value!r} not in {node['enum']}"]
    if kind == "string" and "pattern" in node and not re.search(node["pattern"], value):
        return [f"{path}: {value!r} does not match {node['pattern']}"]
    if kind == "object":
        return _validate_object(node, value, path)
    if kind == "array" and "items" in node:
        return [error for i, item in enumerate(value) for error in validate(node["items"], item, f"{path}[{i}]")]
    return []


def _validate_object(node: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
    properties = node.get("properties", {})
    errors = [f"{path}: missing {key}" for key in node.get("required", []) if key not in value]
    if node.get("additionalProperties") is False:
        errors += [f"{path}: unexpected {key}" for key in value if key not in properties]
    for key, item in value.items():
        if key in properties:
            errors += validate(properties[key], item, f"{path}.{key}")
    return errors


def shape(name: str, document: dict[str, Any]) -> dict[str, Any]:
    """`conform()` a document (order, invoice, list item, ...) to the named schema."""
    shaped: dict[str, Any] = conform(schema(name), document)
    return shaped


def conform(node: dict[str, Any], value: Any = _MISSING) -> Any:
    """Shape `value` to the schema: keep known keys (in the spec's order), fill missing required ones.

    The generator builds the realistic parts; this walk guarantees that every required field exists with a
    value of the right type (`null` where allowed) and that no key unknown to the spec slips through.
    """
    if value is _MISSING:
        return default(node)
    if value is None:
        return None
    option = _object_option(node) if isinstance(value, dict) else _array_option(node)
    if isinstance(value, dict) and option is not None:
        properties = option.get("properties", {})
        required = option.get("required", [])
        return {
            key: conform(sub, value.get(key, _MISSING))
            for key, sub in properties.items()
            if key in value or key in required
        }
    if isinstance(value, list) and option is not None and "items" in option:
        return [conform(option["items"], item) for item in value]
    return value


def _object_option(node: dict[str, Any]) -> dict[str, Any] | None:
    return _option(node, "properties")


def _array_option(node: dict[str, Any]) -> dict[str, Any] | None:
    return _option(node, "items")


def _option(node: dict[str, Any], key: str) -> dict[str, Any] | None:
    """`node` itself or its first `oneOf` alternative that has `key`."""
    options: list[dict[str, Any]] = [node, *node.get("oneOf", [])]
    return next((option for option in options if key in option), None)


def nullable(node: dict[str, Any]) -> bool:
    """Whether the schema allows null (`type: [..., "null"]`, a null enum value or a null `oneOf` option)."""
    return any("null" in _types(option) for option in node.get("oneOf", [node]))


def nulled(name: str, document: dict[str, Any], nulls: Nulls = "objects") -> dict[str, Any]:
    """`document` with null in every field that the named schema marks nullable, at every depth.

    Fields the document lacks are added as null too. With "objects" a nullable object becomes null as a
    whole (an order without a status); with "fields" a present one stays and its own nullable fields
    become null (a status without a name).
    """
    shaped: dict[str, Any] = _nulled(schema(name), document, keep_objects=nulls == "fields")
    return shaped


def _nulled(node: dict[str, Any], value: Any, keep_objects: bool) -> Any:
    if isinstance(value, list):
        option = _array_option(node)
        return [_nulled(option["items"], item, keep_objects) for item in value] if option else value
    option = _object_option(node) if isinstance(value, dict) else None
    if option is None:
        return value
    shaped = dict(value)
    for key, sub in option["properties"].items():
        present = shaped.get(key)
        if nullable(sub) and not (keep_objects and isinstance(present, dict | list)):
            shaped[key] = None
        elif key in shaped:
            shaped[key] = _nulled(sub, present, keep_objects)
    return shaped


def default(node: dict[str, Any]) -> Any:
    """A schema-valid placeholder: null when allowed, else an enum value, a valid example or a zero value."""
    options = node.get("oneOf", [node])
    types = set().union(*(_types(option) for option in options))
    if "null" in types:
        return None
    for option in options:
        for candidate in [*option.get("enum", []), *option.get("examples", [])]:
            if candidate is not None and not validate(option, candidate):
                return candidate
        if "properties" in option:
            return {key: default(option["properties"][key]) for key in option.get("required", [])}
    node = options[0]
    zero_values = {"array": [], "integer": 0, "number": 0, "boolean": False}
    for kind, zero in zero_values.items():
        if kind in types:
            return zero
    return _PATTERN_DEFAULTS.get(node.get("pattern", ""), "")
