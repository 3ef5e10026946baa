"""Request bodies in the OpenAPI document for handlers that read the raw body.

Ingestion decodes bodies itself (exact decimals, an error per batch index), so
Litestar cannot infer their schema; this states it from the same msgspec
Structs the handlers decode with, plus the rules checked in code (event types,
metric ranges), so clients and schemathesis see the real contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

_KEYS = {"minLength": "min_length", "maxLength": "max_length", "anyOf": "any_of",
         "additionalProperties": "additional_properties", "minItems": "min_items",
         "maxItems": "max_items", "minimum": "minimum", "maximum": "maximum",
         "exclusiveMaximum": "exclusive_maximum"}


def to_schema(node: dict[str, Any] | bool) -> Schema | bool:
    """A JSON Schema dict (as msgspec.json.schema writes it) as Litestar's Schema."""
    if isinstance(node, bool):
        return node
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            fields["type"] = OpenAPIType(value)
        elif key == "properties":
            fields["properties"] = {k: to_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            fields[_KEYS.get(key, key)] = to_schema(value)
        elif key == "anyOf":
            fields["any_of"] = [to_schema(v) for v in value]
        elif key in ("required", "enum", "format", "title", "description", "default", "examples"):
            fields[key] = value
        elif key in _KEYS:
            fields[_KEYS[key]] = value
    return Schema(**fields)


def json_request_body(schema: dict[str, Any], description: str) -> type[Operation]:
    """An Operation class for @post(operation_class=...) that documents a JSON body."""
    root = to_schema(schema)
    assert isinstance(root, Schema), "a request body schema is an object, not true/false"
    body = RequestBody(content={"application/json": OpenAPIMediaType(schema=root)},
                       description=description, required=True)

    @dataclass
    class WithJsonBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return WithJsonBody
