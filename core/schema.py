"""The measurement's JSON Schema, generated from the pydantic models (researchers read the committed copy).

Regenerate after changing a model: ``python -m gatewatch.core.schema docs/measurement.schema.json``.
A test fails while the committed file is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .measurement import Measurement

__all__ = ["measurement_json_schema", "render", "write_or_print"]

SCHEMA_ID = "https://gatewatch.invalid/schemas/measurement.schema.json"


def measurement_json_schema() -> dict[str, Any]:
    schema = Measurement.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render() -> str:
    return json.dumps(measurement_json_schema(), indent=2, sort_keys=True) + "\n"


def write_or_print(text: str, argv: list[str] | None = None) -> int:
    """The command line of a generated document: write it to the path given, or to standard output."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return write_or_print(render(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
