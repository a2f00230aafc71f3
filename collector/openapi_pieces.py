"""The pieces every part of the collector's OpenAPI document is written with (openapi.py): references to
the wire models' component schemas, JSON answers, the error body, query parameters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gatewatch.core.wire import ErrorBody

from .research import QueryParameter

__all__ = [
    "BAD_QUERY",
    "CC_PARAMETER",
    "REF",
    "RETRY_AFTER",
    "STORE_DOWN",
    "error",
    "json_answer",
    "query_parameters",
    "ref",
]

REF = "#/components/schemas/{model}"

RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def json_answer(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return json_answer(ref(ErrorBody), description, headers)


STORE_DOWN = error("The store is unreachable; try again later.", RETRY_AFTER)
BAD_QUERY = error("A parameter is unknown, repeated, empty or has a bad value (named in detail).")


def query_parameters(parameters: tuple[QueryParameter, ...]) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
        for p in parameters
    ]


# The country a per-country endpoint answers for (test list, confirmation list).
CC_PARAMETER: dict[str, Any] = {
    "name": "cc",
    "in": "query",
    "required": True,
    "description": "Country code.",
    "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
}
