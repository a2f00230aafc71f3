"""Answers built from the wire models (:mod:`gatewatch.core.wire`): the one way a handler turns a model
into an HTTP response.

``json.dumps`` writes the body (through aiohttp's ``json_response``), as before the models: the bytes
clients see (spacing, ASCII escapes) are unchanged.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from gatewatch.core.wire import ErrorBody

__all__ = ["error_response", "model_response"]


def model_response(
    model: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None, exclude_none: bool = False
) -> web.Response:
    """``model`` as its JSON; ``exclude_none`` for a model whose unset fields are absent, not null."""
    return web.json_response(
        model.model_dump(mode="json", exclude_none=exclude_none), status=status, headers=headers
    )


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An :class:`ErrorBody` (``error`` one of :mod:`gatewatch.core.vocabulary`'s reasons)."""
    return model_response(ErrorBody(error=error, detail=detail), status=status, headers=headers)
