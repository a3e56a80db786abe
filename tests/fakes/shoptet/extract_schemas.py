"""Extract the schemas the fake Shoptet needs from Shoptet's OpenAPI spec into ``schemas.json``.

Usage: ``python -m tests.fakes.shoptet.extract_schemas path/to/openapi.yaml``

The fake reads only the JSON at run time (no YAML parsing at start-up). Every ``$ref`` is inlined, and
descriptions and vendor extensions are dropped to keep the file small; ``examples`` stay because the
data generator uses them as fallback values.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

OUTPUT = Path(__file__).with_name("schemas.json")

# Named component schemas, extracted as-is (resolved).
COMPONENTS = ("order", "orderItem", "invoice", "invoiceItem", "webhook", "webhookNotification", "paginator")

# Schemas defined inline on an operation: name -> (path, method, status, pointer inside the response schema).
INLINE = {
    "orderListItem": ("/api/orders", "get", 200, ("properties", "data", "properties", "orders", "items")),
    "invoiceListItem": ("/api/invoices", "get", 200, ("properties", "data", "properties", "invoices", "items")),
    "orderChange": ("/api/orders/changes", "get", 200, ("properties", "data", "properties", "changes", "items")),
    "invoiceChange": ("/api/invoices/changes", "get", 200, ("properties", "data", "properties", "changes", "items")),
    "eshop": ("/api/eshop", "get", 200, ("properties", "data")),
    "job": ("/api/system/jobs/{jobId}", "get", 200, ("properties", "data", "properties", "job")),
    "jobListItem": ("/api/system/jobs", "get", 200, ("properties", "data", "properties", "jobs", "items")),
}

DROPPED_KEYS = {"description", "deprecated", "example"}


def resolve(node: Any, components: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Return `node` with every `$ref` replaced by a copy of its target (cycles are left as `$ref`)."""
    if isinstance(node, list):
        return [resolve(item, components, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return {"$ref": node["$ref"]}
        target = resolve(components[name], components, (*seen, name))
        siblings = {key: value for key, value in node.items() if key != "$ref" and key not in DROPPED_KEYS}
        return {**target, **resolve(siblings, components, seen)}
    return {
        key: resolve(value, components, seen)
        for key, value in node.items()
        if key not in DROPPED_KEYS and not key.startswith("x-")
    }


def inline_schema(spec: dict[str, Any], path: str, method: str, status: int, pointer: tuple[str, ...]) -> Any:
    node = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    for key in pointer:
        node = node[key]
    return node


def table_values(description: str, heading: str) -> list[str]:
    """First column of the markdown table that follows `heading` in the spec's description."""
    section = description.split(heading, 1)[1]
    values: list[str] = []
    in_table = False
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 2:
            if in_table:
                break
            continue
        in_table = True
        value = re.sub(r"\s*\(\*\)$", "", cells[0])
        if value and not set(value) <= {"-"} and value not in {"Value", "id"} and value not in values:
            values.append(value)
    return values


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    components = spec["components"]["schemas"]
    schemas = {name: resolve(components[name], components) for name in COMPONENTS}
    for name, location in INLINE.items():
        schemas[name] = resolve(inline_schema(spec, *location), components)
    description = spec["info"]["description"]
    return {
        "schemas": schemas,
        "webhookEvents": table_values(description, "## Webhook event types"),
        "massWebhookEvents": table_values(description, "### Mass Webhooks"),
        "systemWebhookEvents": table_values(description, "### System Webhooks"),
        "vatModes": table_values(description, "## VAT modes"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("openapi", type=Path, help="Shoptet's openapi.yaml")
    args = parser.parse_args()
    spec = yaml.safe_load(args.openapi.read_text(encoding="utf-8"))
    OUTPUT.write_text(json.dumps(extract(spec), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
